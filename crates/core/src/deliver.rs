//! Routing a message to sessions, the per-session in-flight window and queue, and the end of
//! connections and sessions.

use std::sync::Arc;

use bytestring::ByteString;
use std::time::{Duration, Instant};

use midge_codec::{Disconnect, Packet, Publish, QoS, ReasonCode};

use crate::session::{Delivery, InFlight, OutState};
use crate::trie::Subscriber;
use crate::{Action, Broker, ClientInfo, ConnId, Message, SessionId};

impl Broker {
    /// Store or clear a retained message.
    pub(crate) fn retain(&mut self, msg: Message) {
        let stored = self.persist.then(|| {
            let topic = msg.topic.as_byte_string().clone();
            let body = (!msg.payload.is_empty()).then(|| Arc::new(msg.clone()));
            (topic, body)
        });
        let expires_at = msg.expires_at;
        if !self.retained.set(msg, self.config.max_retained_messages) {
            self.stats.messages_dropped += 1;
        } else {
            if let Some(at) = expires_at {
                self.arm_retained(at);
            }
            if let Some((topic, body)) = stored {
                self.persist_retain(&topic, body);
            }
        }
    }

    /// Deliver a message to every matching session. `origin` is the publishing session (for
    /// No Local). Returns the number of sessions it went to.
    pub(crate) fn route(
        &mut self,
        now: Instant,
        msg: Arc<Message>,
        origin: Option<SessionId>,
        out: &mut Vec<Action>,
    ) -> usize {
        self.route_to(now, msg, origin, false, out)
    }

    /// Deliver a message another node forwarded (`Broker::publish_remote`): to the local
    /// sessions of its plain subscriptions, or (`group`) to one local member of that share
    /// group. Nothing goes to other nodes again.
    pub(crate) fn route_local(
        &mut self,
        now: Instant,
        msg: Arc<Message>,
        group: Option<&Arc<(Box<str>, Box<str>)>>,
        out: &mut Vec<Action>,
    ) -> usize {
        let Some(key) = group else {
            return self.route_to(now, msg, None, true, out);
        };
        let Some((node, gi)) = self.tree.group_position(&key.0, &key.1) else {
            return 0;
        };
        match self.pick_shared(node, gi, &msg, true) {
            Some((sid, d)) => {
                self.deliver(now, sid, d, out);
                1
            }
            None => 0,
        }
    }

    /// A share group's pick: a local member gets the delivery, a remote node the message.
    fn deliver_or_forward(
        &mut self,
        now: Instant,
        sid: SessionId,
        d: Delivery,
        out: &mut Vec<Action>,
    ) {
        // one hash lookup in a cluster, a flag test otherwise: nothing cloned for a local pick
        let Some(node) = self.remote_node(sid).cloned() else {
            return self.deliver(now, sid, d, out);
        };
        if let Some(key) = d.share {
            self.forward(node, &d.msg, crate::Target::Group(key));
        }
    }

    fn route_to(
        &mut self,
        now: Instant,
        msg: Arc<Message>,
        origin: Option<SessionId>,
        local_only: bool,
        out: &mut Vec<Action>,
    ) -> usize {
        let ts = msg
            .origin
            .as_ref()
            .map_or_else(|| self.wall_ms(now), |o| o.received_ms);
        self.last.record(&msg, ts);
        let mut m = std::mem::take(&mut self.scratch);
        self.tree.matches(msg.topic.as_str(), &mut m);
        let mut delivered = 0;
        if !m.subscribers.is_empty() {
            // one delivery per session: the highest QoS of its matching subscriptions and all
            // their identifiers [MQTT-3.3.4-2] [MQTT-3.3.4-4]
            // (the tree often yields them in order already: a check is cheaper than a sort)
            if !m.subscribers.is_sorted_by_key(|s| s.session) {
                m.subscribers.sort_unstable_by_key(|s| s.session);
            }
            let subs = std::mem::take(&mut m.subscribers);
            let mut i = 0;
            while let Some(first) = subs.get(i) {
                let sid = first.session;
                let end = subs
                    .get(i..)
                    .and_then(|rest| rest.iter().position(|s| s.session != sid))
                    .map_or(subs.len(), |p| i + p);
                let group = subs.get(i..end).unwrap_or_default();
                if let Some(node) = self.remote_node(sid) {
                    // another node's clients: one copy for all of them (cluster.rs); a
                    // message from another node goes on only to a session that moved
                    // away from here (the stub names it: no loop)
                    let target = self.remote_target(sid);
                    let onward = !local_only || matches!(target, crate::Target::Session(_));
                    if onward && !msg.topic.as_str().starts_with("$SYS") {
                        let node = node.clone();
                        self.forward(node, &msg, target);
                        delivered += 1;
                    }
                } else if let Some(d) = self.plan(&msg, origin, sid, group) {
                    self.deliver(now, sid, d, out);
                    delivered += 1;
                }
                i = end;
            }
            m.subscribers = subs;
            m.subscribers.clear();
        }
        let groups = std::mem::take(&mut m.groups);
        for &(node, gi) in &groups {
            if local_only {
                break; // the node that forwarded it picked the groups' members
            }
            if let Some((sid, d)) = self.pick_shared(node, gi, &msg, false) {
                self.deliver_or_forward(now, sid, d, out);
                delivered += 1;
            }
        }
        m.groups = groups;
        m.groups.clear();
        self.scratch = m;
        delivered
    }

    /// [`Broker::plan`] for a message from another node (no publishing session here).
    pub(crate) fn plan_for(
        &self,
        msg: &Arc<Message>,
        sid: SessionId,
        subs: &[Subscriber],
    ) -> Option<Delivery> {
        self.plan(msg, None, sid, subs)
    }

    fn plan(
        &self,
        msg: &Arc<Message>,
        origin: Option<SessionId>,
        sid: SessionId,
        subs: &[Subscriber],
    ) -> Option<Delivery> {
        let session = self.session(sid)?;
        let mut qos: Option<QoS> = None;
        let mut retain = false;
        let mut sub_ids = Vec::new();
        for s in subs {
            if s.options.no_local && origin == Some(sid) {
                continue; // [MQTT-3.8.3-3]
            }
            let q = msg.qos.min(s.options.qos);
            qos = Some(qos.map_or(q, |cur| cur.max(q)));
            retain |= s.options.retain_as_published && msg.retain;
            if let Some(id) = s.identifier {
                sub_ids.push(id);
            }
        }
        let qos = qos?;
        if self.auth.checks_delivery() {
            let info = ClientInfo {
                client_id: &session.client_id,
                username: session.username.as_deref(),
                listener: session.listener,
            };
            if !self.auth.can_receive(&info, msg.topic.as_str()) {
                return None;
            }
        }
        // [MQTT-3.3.1-9] (3.1.1): forwarded messages carry RETAIN 0. `retain` is set only by
        // Retain As Published, which a 3.x SUBSCRIBE cannot ask for: a 3.x subscription has it
        // only when a mosquitto bridge (CONNECT level | 0x80) made it (flow/subscribe.rs), and
        // a bridge gets retain flags as published, as from mosquitto
        Some(Delivery {
            msg: msg.clone(),
            qos,
            retain,
            sub_ids,
            share: None,
            seq: 0,
            msg_id: 0,
        })
    }

    /// Choose the member of a share group that gets this message: round robin over members
    /// whose session is connected and able to take it, else over all members.
    fn pick_shared(
        &mut self,
        node: usize,
        gi: usize,
        msg: &Arc<Message>,
        local_only: bool,
    ) -> Option<(SessionId, Delivery)> {
        // the tree and the sessions are separate fields: borrow both, copy nothing
        let sessions = &self.sessions;
        // without a cluster no member is another node: no string test per member
        let clustered = self.cluster.on;
        let remote = |m: &Subscriber| {
            clustered
                && sessions
                    .get(m.session.0 as usize)
                    .and_then(Option::as_ref)
                    .is_some_and(|s| s.client_id.starts_with(crate::cluster::REMOTE_PREFIX))
        };
        // another node counts as online (its own pick finds a member there); a message
        // from another node goes to a local member only
        let online = |m: &Subscriber| {
            if remote(m) {
                return !local_only;
            }
            sessions
                .get(m.session.0 as usize)
                .and_then(Option::as_ref)
                .is_some_and(|s| s.conn.is_some())
        };
        let eligible = |m: &Subscriber| !(local_only && remote(m));
        let g = self.tree.group_mut(node, gi)?;
        let n = g.members.len();
        let any_online = g.members.iter().any(online);
        let idx = (0..n).map(|k| (g.next + k) % n).find(|&i| {
            g.members
                .get(i)
                .is_some_and(|m| eligible(m) && (!any_online || online(m)))
        })?;
        g.next = (idx + 1) % n;
        let sub = *g.members.get(idx)?;
        let share_key = g.key.clone();
        let session = self.session(sub.session)?;
        // another node checks its own client's right to receive
        if self.auth.checks_delivery()
            && !(self.cluster.on && session.client_id.starts_with(crate::cluster::REMOTE_PREFIX))
        {
            let info = ClientInfo {
                client_id: &session.client_id,
                username: session.username.as_deref(),
                listener: session.listener,
            };
            if !self.auth.can_receive(&info, msg.topic.as_str()) {
                return None;
            }
        }
        // as in `plan`: a 3.x subscription has Retain As Published only from a bridge
        let retain = sub.options.retain_as_published && msg.retain;
        Some((
            sub.session,
            Delivery {
                msg: msg.clone(),
                qos: msg.qos.min(sub.options.qos),
                retain,
                sub_ids: sub.identifier.into_iter().collect(),
                share: Some(share_key),
                seq: 0,
                msg_id: 0,
            },
        ))
    }

    /// Hand a delivery to a session: send now if its connection can take it, else queue.
    pub(crate) fn deliver(
        &mut self,
        now: Instant,
        sid: SessionId,
        d: Delivery,
        out: &mut Vec<Action>,
    ) {
        // a flag test outside a cluster, a map test while sessions moved here lately
        if self.cluster.on && self.cluster.moved_in() && !self.first_copy(sid, &d.msg) {
            return;
        }
        let max_inflight = self.config.max_inflight_messages;
        let Some(session) = self.session(sid) else {
            return;
        };
        let conn = session.conn;
        let writable = conn
            .and_then(|c| self.conns.get(&c))
            .is_some_and(|c| c.writable);
        match conn {
            Some(conn) if writable && session.flow().queue.is_empty() => {
                if d.qos == QoS::AtMostOnce {
                    self.send_publish(now, conn, sid, &d, 0, false, out);
                } else if session.flow().unsent == 0
                    && session.flow().inflight.len() < session.window(max_inflight)
                {
                    self.start_inflight(now, conn, sid, d, out);
                } else {
                    self.enqueue(sid, d);
                }
            }
            // not writable, or older messages are waiting: keep order and spill into the
            // session's bounded queue (QoS 0 is the first to go when it is full)
            Some(_) => self.enqueue(sid, d),
            None => {
                if d.qos == QoS::AtMostOnce && !self.config.queue_qos0_offline {
                    // QoS 0 is not kept for offline sessions (as mosquitto by default)
                } else {
                    self.enqueue(sid, d);
                }
            }
        }
    }

    fn drop_message(&mut self) {
        self.stats.messages_dropped += 1;
    }

    /// Queue a delivery, within the per-session message and byte limits. When full, a queued
    /// QoS 0 message makes room for a QoS 1/2 one; otherwise the new message is dropped and
    /// counted.
    fn enqueue(&mut self, sid: SessionId, mut d: Delivery) {
        let max_bytes = self.config.max_queued_bytes;
        let max_msgs = self.config.max_queued_messages;
        let Some(s) = self.session_mut(sid) else {
            return;
        };
        // QoS 1/2 to the server's own clients (the hub) is bounded by bytes only: a burst
        // of small readings must wait for the next batch commit, not be dropped at a
        // message count. QoS 0 (the HTTP API's live streams) keeps the count limit.
        let max_msgs = if s.is_internal() && d.qos != QoS::AtMostOnce {
            0
        } else {
            max_msgs
        };
        let size = d.msg.payload.len();
        // 0 means no limit, as in mosquitto
        let full = |f: &crate::session::Flow| {
            (max_msgs != 0 && f.queue.len() >= max_msgs)
                || (max_bytes != 0 && f.queued_bytes + size > max_bytes)
        };
        let mut evicted = 0;
        let mut gone = Vec::new();
        let f = s.flow_mut();
        if full(f) && d.qos != QoS::AtMostOnce {
            while full(f) {
                let Some(pos) = f.queue.iter().position(|q| q.qos == QoS::AtMostOnce) else {
                    break;
                };
                if let Some(old) = f.queue.remove(pos) {
                    f.queued_bytes -= old.msg.payload.len();
                    evicted += 1;
                    if old.seq != 0 {
                        gone.push(old.seq);
                    }
                }
            }
        }
        self.stats.messages_dropped += evicted;
        for seq in gone {
            self.persist_delivery_gone(sid, seq);
        }
        let Some(s) = self.session_mut(sid) else {
            return;
        };
        if full(s.flow()) {
            self.stats.messages_dropped += 1;
            self.persist_delivery_gone(sid, d.seq);
            return;
        }
        if self.persist {
            self.persist_delivery(sid, &mut d, crate::DeliveryState::Queued);
        }
        let Some(s) = self.session_mut(sid) else {
            return;
        };
        let f = s.flow_mut();
        f.queued_bytes += size;
        f.queue.push_back(d);
    }

    fn start_inflight(
        &mut self,
        now: Instant,
        conn: ConnId,
        sid: SessionId,
        mut d: Delivery,
        out: &mut Vec<Action>,
    ) {
        let Some(s) = self.session_mut(sid) else {
            return;
        };
        let packet_id = s.alloc_packet_id();
        let state = if d.qos == QoS::AtLeastOnce {
            OutState::AwaitPubAck
        } else {
            OutState::AwaitPubRec
        };
        if self.send_publish(now, conn, sid, &d, packet_id, false, out) {
            if self.persist {
                let stored = match state {
                    OutState::AwaitPubAck => crate::DeliveryState::AwaitPubAck(packet_id),
                    _ => crate::DeliveryState::AwaitPubRec(packet_id),
                };
                self.persist_delivery(sid, &mut d, stored);
            }
            if let Some(s) = self.session_mut(sid) {
                s.flow_mut().inflight.push_back(InFlight {
                    packet_id,
                    state,
                    delivery: d,
                    sent: true,
                });
            }
        } else {
            self.persist_delivery_gone(sid, d.seq);
        }
    }

    /// Move queued messages into the connection while the window and the socket allow.
    pub(crate) fn pump(&mut self, now: Instant, sid: SessionId, out: &mut Vec<Action>) {
        let max_inflight = self.config.max_inflight_messages;
        loop {
            let Some(s) = self.session(sid) else { return };
            let Some(conn) = s.conn else { return };
            if !self.conns.get(&conn).is_some_and(|c| c.writable) {
                return;
            }
            let window = s.window(max_inflight);
            if s.flow().unsent > 0 {
                // what was in flight before a resume goes first, in its order
                if self.resend_one(now, conn, sid, window, out) {
                    continue;
                }
                return;
            }
            let flow = s.flow();
            let Some(front) = flow.queue.front() else {
                return;
            };
            if front.qos != QoS::AtMostOnce && flow.inflight.len() >= window {
                return;
            }
            let Some(s) = self.session_mut(sid) else {
                return;
            };
            let f = s.flow_mut();
            let Some(d) = f.queue.pop_front() else { return };
            f.queued_bytes -= d.msg.payload.len();
            if d.qos == QoS::AtMostOnce {
                self.send_publish(now, conn, sid, &d, 0, false, out);
                self.persist_delivery_gone(sid, d.seq);
            } else {
                self.start_inflight(now, conn, sid, d, out);
            }
        }
    }

    /// Build and send one PUBLISH. Returns false if it was not sent (expired, or larger than
    /// the client's Maximum Packet Size, which the spec says to discard [MQTT-3.1.2-25]).
    #[allow(clippy::too_many_arguments)] // the PUBLISH's identity is spread over its flow
    pub(crate) fn send_publish(
        &mut self,
        now: Instant,
        conn: ConnId,
        sid: SessionId,
        d: &Delivery,
        packet_id: u16,
        dup: bool,
        out: &mut Vec<Action>,
    ) -> bool {
        let msg = &d.msg;
        let remaining = match msg.expires_at {
            Some(at) if at <= now => {
                self.drop_message();
                return false;
            }
            // [MQTT-3.3.2-6] the received interval minus the time waited: 4 s after a few
            // ms is still 4 (rounded up), and never 0 while the message lives
            Some(at) => {
                let left = at.duration_since(now);
                let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
                Some(u32::try_from(secs).unwrap_or(u32::MAX).max(1))
            }
            None => None,
        };
        let Some(c) = self.conns.get_mut(&conn) else {
            return false;
        };
        let v5 = c.protocol.is_v5();
        let mut publish = Publish {
            dup,
            qos: d.qos,
            retain: d.retain,
            topic: msg.topic.clone(),
            packet_id,
            properties: if v5 {
                msg.properties.clone()
            } else {
                Default::default()
            },
            payload: msg.payload.clone(),
        };
        if v5 {
            if c.internal {
                if let Some(o) = &msg.origin {
                    let props = &mut publish.properties.user_properties;
                    props.push((crate::ORIGIN_CLIENT_ID.into(), o.client_id.clone()));
                    if let Some(u) = &o.username {
                        props.push((crate::ORIGIN_USERNAME.into(), u.clone()));
                    }
                    if o.received_ms != 0 {
                        props.push((crate::ORIGIN_TIME.into(), o.received_ms.to_string().into()));
                    }
                }
            }
            // written only when they differ: writing allocates the properties' block, which
            // most messages do not have
            if publish.properties.message_expiry_interval != remaining {
                publish.properties.message_expiry_interval = remaining;
            }
            if publish.properties.subscription_identifiers != d.sub_ids {
                publish
                    .properties
                    .subscription_identifiers
                    .clone_from(&d.sub_ids);
            }
            // outbound topic alias: the first PUBLISH on a topic sets the alias, later ones
            // send an empty topic with it
            if c.topic_alias_max_out > 0 {
                let aliases = c.aliases_out.get_or_insert_with(Default::default);
                if let Some(&alias) = aliases.get(msg.topic.as_byte_string()) {
                    publish.topic = midge_codec::TopicName::empty();
                    publish.properties.topic_alias = Some(alias);
                } else if aliases.len() < usize::from(c.topic_alias_max_out) {
                    let alias = aliases.len() as u16 + 1;
                    // own copy of the topic: the alias map outlives the message's buffer
                    aliases.insert(ByteString::from(msg.topic.as_str()), alias);
                    publish.properties.topic_alias = Some(alias);
                }
            }
        }
        let protocol = c.protocol;
        let Some(session) = self.session(sid) else {
            return false;
        };
        if session.client_max_packet != u32::MAX {
            let packet = Packet::Publish(publish);
            let fits = packet
                .encoded_len(protocol)
                .is_ok_and(|n| n <= session.client_max_packet as usize);
            if !fits {
                self.drop_message();
                return false;
            }
            out.push(Action::Send(conn, packet));
        } else {
            out.push(Action::Send(conn, Packet::Publish(publish)));
        }
        self.stats.messages_sent += 1;
        true
    }

    /// Re-send what is in flight after a session resumes: PUBLISH with DUP for unacknowledged
    /// messages, PUBREL for those already received, with their original packet ids
    /// [MQTT-4.4.0-1]. Only as many as the client's new Receive Maximum (and our in-flight
    /// limit) go at once [MQTT-3.3.4-9]: this marks them all unsent, and [`Broker::pump`]
    /// sends them, oldest first, as the window allows.
    pub(crate) fn resend_inflight(&mut self, sid: SessionId) {
        let Some(f) = self.session_mut(sid).and_then(|s| s.flow_mut_if_any()) else {
            return;
        };
        for e in f.inflight.iter_mut() {
            e.sent = false;
        }
        f.unsent = f.inflight.len();
    }

    /// Send the oldest in-flight entry not yet sent on this connection, if the window has
    /// room. Returns false when there is none or no room.
    fn resend_one(
        &mut self,
        now: Instant,
        conn: ConnId,
        sid: SessionId,
        window: usize,
        out: &mut Vec<Action>,
    ) -> bool {
        let Some(flow) = self.session(sid).map(|s| s.flow()) else {
            return false;
        };
        if flow.unsent == 0 || flow.outstanding() >= window {
            return false;
        }
        let Some((pos, f)) = flow.inflight.iter().enumerate().find(|(_, f)| !f.sent) else {
            return false;
        };
        let (packet_id, state, delivery) = (f.packet_id, f.state, f.delivery.clone());
        let sent = if state == OutState::AwaitPubComp {
            out.push(Action::Send(
                conn,
                Packet::PubRel(midge_codec::PubAck::new(packet_id)),
            ));
            true
        } else {
            self.send_publish(now, conn, sid, &delivery, packet_id, true, out)
        };
        let Some(flow) = self.session_mut(sid).map(|s| s.flow_mut()) else {
            return false;
        };
        if sent {
            flow.mark_sent(pos);
        } else if let Some(gone) = flow.remove(pos) {
            // expired, or larger than the client now accepts
            self.persist_delivery_gone(sid, gone.delivery.seq);
        }
        true
    }

    /// Send an error to a connection (DISCONNECT in MQTT 5) and close it abnormally.
    pub(crate) fn fail(
        &mut self,
        now: Instant,
        conn: ConnId,
        reason: ReasonCode,
        out: &mut Vec<Action>,
    ) {
        if let Some(c) = self.conns.get(&conn) {
            if c.protocol.is_v5() && c.session.is_some() {
                out.push(Action::Send(
                    conn,
                    Packet::Disconnect(Disconnect::new(reason)),
                ));
            }
        }
        out.push(Action::Close(conn));
        self.closed(now, conn, crate::CloseCause::ProtocolError, out);
    }

    /// Detach a session from its connection. With `abnormal`, the will is published now or
    /// scheduled after its delay; messages from shared subscriptions move to other members.
    pub(crate) fn detach(
        &mut self,
        now: Instant,
        sid: SessionId,
        conn: ConnId,
        abnormal: bool,
        out: &mut Vec<Action>,
    ) {
        let Some(s) = self.session_mut(sid) else {
            return;
        };
        if s.conn != Some(conn) {
            return;
        }
        s.conn = None;
        s.disconnected_at = Some(now);
        self.connected = self.connected.saturating_sub(1);
        let Some(s) = self.session_mut(sid) else {
            return;
        };
        if !abnormal {
            s.will = None;
        }
        let will_delay = s
            .will
            .as_ref()
            .map(|w| w.will.properties.will_delay_interval.unwrap_or(0));
        let expiry = s.expiry_interval;
        match will_delay {
            Some(0) => self.publish_will(now, sid, out),
            Some(delay) => {
                if let Some(w) = self.session_mut(sid).and_then(|s| s.will.as_mut()) {
                    w.at = Some(now + Duration::from_secs(u64::from(delay)));
                }
            }
            None => {}
        }
        self.persist_header(sid);
        self.redistribute_shared(now, sid, out);
        if expiry == 0 {
            self.end_session(now, sid, out);
        } else {
            self.arm_session(sid);
        }
    }

    /// Move in-flight and queued messages that came through a share group to another member
    /// of that group that is connected.
    fn redistribute_shared(&mut self, now: Instant, sid: SessionId, out: &mut Vec<Action>) {
        let Some(s) = self.session_mut(sid) else {
            return;
        };
        let Some(flow) = s.flow_mut_if_any() else {
            return;
        };
        if !flow.inflight.iter().any(|f| f.delivery.share.is_some())
            && !flow.queue.iter().any(|d| d.share.is_some())
        {
            return;
        }
        let mut moved = Vec::new();
        let inflight = std::mem::take(&mut flow.inflight);
        for f in inflight {
            // a QoS 2 message whose PUBREC arrived is already delivered: keep its PUBREL flow
            if f.delivery.share.is_some() && f.state != OutState::AwaitPubComp {
                moved.push(f.delivery);
            } else {
                flow.inflight.push_back(f);
            }
        }
        flow.recount();
        let queue = std::mem::take(&mut flow.queue);
        for d in queue {
            if d.share.is_some() {
                flow.queued_bytes -= d.msg.payload.len();
                moved.push(d);
            } else {
                flow.queue.push_back(d);
            }
        }
        for mut d in moved {
            let target = d
                .share
                .as_ref()
                .and_then(|k| self.other_member(&k.0, &k.1, sid));
            match target {
                Some(other) => {
                    self.persist_delivery_gone(sid, d.seq);
                    d.seq = 0;
                    d.msg_id = 0;
                    self.deliver_or_forward(now, other, d, out);
                }
                None => {
                    // nobody else can take it: keep it with this session
                    if d.seq != 0 {
                        self.persist_delivery(sid, &mut d, crate::DeliveryState::Queued);
                    }
                    if let Some(s) = self.session_mut(sid) {
                        let f = s.flow_mut();
                        f.queued_bytes += d.msg.payload.len();
                        f.queue.push_back(d);
                    }
                }
            }
        }
    }

    fn other_member(&mut self, filter: &str, group: &str, not: SessionId) -> Option<SessionId> {
        let members: Vec<SessionId> = self
            .tree
            .group_by_name(filter, group)?
            .members
            .iter()
            .map(|m| m.session)
            .collect();
        // a connected member here first, else another node with members (a cluster)
        let connected = members
            .iter()
            .copied()
            .find(|&m| m != not && self.session(m).is_some_and(|s| s.conn.is_some()));
        connected.or_else(|| {
            members
                .into_iter()
                .find(|&m| m != not && self.is_remote_node(m))
        })
    }

    /// Publish the session's will (if still pending) and forget it.
    pub(crate) fn publish_will(&mut self, now: Instant, sid: SessionId, out: &mut Vec<Action>) {
        let Some(s) = self
            .sessions
            .get_mut(sid.0 as usize)
            .and_then(Option::as_mut)
        else {
            return;
        };
        let Some(will) = s.will.take().map(|w| w.will) else {
            return;
        };
        if self.persist {
            self.persist_header(sid);
        }
        let Some(s) = self.session(sid) else { return };
        let info_ok = {
            let info = ClientInfo {
                client_id: &s.client_id,
                username: s.username.as_deref(),
                listener: s.listener,
            };
            self.auth.can_publish(&info, will.topic.as_str())
        };
        if !info_ok {
            return;
        }
        let properties: midge_codec::PublishProperties = midge_codec::PublishPropertyValues {
            payload_format_indicator: will.properties.payload_format_indicator,
            message_expiry_interval: None,
            topic_alias: None,
            response_topic: will.properties.response_topic.clone(),
            correlation_data: will.properties.correlation_data.clone(),
            user_properties: will.properties.user_properties.clone(),
            subscription_identifiers: Vec::new(),
            content_type: will.properties.content_type.clone(),
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
                .map(|s| now + Duration::from_secs(u64::from(s))),
            origin: self.session(sid).map(|s| crate::Origin {
                client_id: s.client_id.clone(),
                username: s.username.clone(),
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

    /// End a session: its will goes out if still pending [MQTT-3.1.3-9], its subscriptions and
    /// messages are discarded.
    pub(crate) fn end_session(&mut self, now: Instant, sid: SessionId, out: &mut Vec<Action>) {
        if self.session(sid).is_some_and(|s| s.will.is_some()) {
            self.publish_will(now, sid, out);
        }
        self.redistribute_shared(now, sid, out);
        let Some(slot) = self.sessions.get_mut(sid.0 as usize) else {
            return;
        };
        let Some(s) = slot.take() else { return };
        self.persist_session_end(&s);
        for filter in s.subscriptions.get().into_iter().flat_map(|m| m.keys()) {
            if let Ok(f) = midge_codec::TopicFilter::new(filter.clone()) {
                if self.tree.remove(f.filter(), f.share_group(), sid) {
                    self.interest_removed(sid, filter);
                }
            }
        }
        if self.by_client_id.get(&s.client_id) == Some(&sid) {
            self.by_client_id.remove(&s.client_id);
        }
        self.free_sessions.push(sid.0);
    }
}
