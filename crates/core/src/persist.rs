//! Durable state, described without I/O.
//!
//! With persistence on ([`Broker::enable_persistence`]), every change to state that must
//! survive a restart is described as a [`StoreOp`] in a buffer the caller drains with
//! [`Broker::take_store_ops`] after each call. The caller (the server's router) writes them
//! to a store and holds back the actions of that call (acknowledgements above all) until the
//! ops are durable. Sessions with expiry 0 never produce ops; with persistence off nothing
//! is built at all.
//!
//! [`Broker::restore`] rebuilds sessions, queues, in-flight windows and retained messages
//! from a [`Restored`] image, so a recovered session looks exactly like one whose client
//! disconnected.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytestring::ByteString;
use midge_codec::{LastWill, Protocol, QoS, SubscriptionOptions};

use crate::session::{Delivery, InFlight, OutState, Session, SubRecord};
use crate::trie::Subscriber;
use crate::{Broker, Message, SessionId};

/// Identifies a stored message body (one per routed message, shared by its deliveries).
pub type MsgId = u64;

/// Where a stored delivery is in its flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// Waiting in the session's queue.
    Queued,
    /// QoS 1 PUBLISH sent with this packet id, PUBACK awaited.
    AwaitPubAck(u16),
    /// QoS 2 PUBLISH sent with this packet id, PUBREC awaited.
    AwaitPubRec(u16),
    /// PUBREL sent for this packet id, PUBCOMP awaited.
    AwaitPubComp(u16),
}

/// The per-session fields that are stored whole on every change (rare changes: connect,
/// disconnect, will).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionHeader {
    /// Client identifier (the session's key).
    pub client_id: ByteString,
    /// User name of its latest connection.
    pub username: Option<ByteString>,
    /// Protocol of its latest connection.
    pub protocol: Protocol,
    /// Session expiry interval in seconds (`u32::MAX` = never); never 0 in the store.
    pub expiry_interval: u32,
    /// The will, while pending.
    pub will: Option<LastWill>,
    /// When a delayed will is due (set while disconnected).
    pub will_at: Option<Instant>,
    /// When its connection ended (`None` while connected).
    pub disconnected_at: Option<Instant>,
}

/// One durable change.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreOp {
    /// Create or update a persistent session's header.
    Session(Box<SessionHeader>),
    /// The session ended: forget it with its subscriptions, deliveries and QoS 2 state.
    SessionDelete(ByteString),
    /// A subscription was added or replaced.
    Subscribe {
        /// Session.
        client_id: ByteString,
        /// Raw filter (with any `$share/group/` prefix).
        filter: ByteString,
        /// Options granted.
        options: SubscriptionOptions,
        /// Subscription identifier.
        identifier: Option<u32>,
    },
    /// A subscription was removed.
    Unsubscribe {
        /// Session.
        client_id: ByteString,
        /// Raw filter.
        filter: ByteString,
    },
    /// A message body that deliveries refer to (stored once however many sessions hold it).
    Message {
        /// Its id.
        id: MsgId,
        /// The message.
        msg: Arc<Message>,
    },
    /// A delivery to a session was created or changed state.
    Delivery {
        /// Session.
        client_id: ByteString,
        /// Order of the delivery within the broker (queue and in-flight order).
        seq: u64,
        /// The message body.
        msg: MsgId,
        /// QoS of this delivery.
        qos: QoS,
        /// Retain flag of this delivery.
        retain: bool,
        /// Subscription identifiers to send with it.
        sub_ids: Vec<u32>,
        /// Queued or in flight.
        state: DeliveryState,
    },
    /// A delivery ended (acknowledged, expired, dropped or moved).
    DeliveryDelete {
        /// Session.
        client_id: ByteString,
        /// The delivery.
        seq: u64,
    },
    /// An inbound QoS 2 packet id started (`pending`) or finished awaiting PUBREL.
    InboundQos2 {
        /// Session.
        client_id: ByteString,
        /// Packet identifier.
        packet_id: u16,
        /// True when the PUBREC was sent, false after PUBREL.
        pending: bool,
    },
    /// The retained message of a topic was set (`Some`) or cleared.
    Retain {
        /// Topic.
        topic: ByteString,
        /// The message.
        msg: Option<Arc<Message>>,
    },
}

/// A delivery as recovered from the store.
#[derive(Debug, Clone, PartialEq)]
pub struct RestoredDelivery {
    /// Its order.
    pub seq: u64,
    /// Its body's id.
    pub msg_id: MsgId,
    /// The message (shared between deliveries of one body).
    pub msg: Arc<Message>,
    /// QoS of this delivery.
    pub qos: QoS,
    /// Retain flag of this delivery.
    pub retain: bool,
    /// Subscription identifiers.
    pub sub_ids: Vec<u32>,
    /// Queued or in flight.
    pub state: DeliveryState,
}

/// A persistent session as recovered from the store.
#[derive(Debug, Clone, PartialEq)]
pub struct RestoredSession {
    /// Header fields.
    pub header: SessionHeader,
    /// Raw filter, options, identifier.
    pub subscriptions: Vec<(ByteString, SubscriptionOptions, Option<u32>)>,
    /// Deliveries in any order (sorted by `seq` on restore).
    pub deliveries: Vec<RestoredDelivery>,
    /// Inbound QoS 2 packet ids awaiting PUBREL.
    pub inbound_qos2: Vec<u16>,
}

/// Everything a store recovered.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Restored {
    /// Persistent sessions.
    pub sessions: Vec<RestoredSession>,
    /// Retained messages.
    pub retained: Vec<Message>,
}

impl Broker {
    /// Describe durable changes from now on (see the module docs). Call before any
    /// connection is opened.
    pub fn enable_persistence(&mut self) {
        self.persist = true;
    }

    /// Move the durable changes of the calls since the last drain into `ops`.
    pub fn take_store_ops(&mut self, ops: &mut Vec<StoreOp>) {
        ops.append(&mut self.ops);
    }

    /// Whether any durable change is waiting to be drained.
    pub fn has_store_ops(&self) -> bool {
        !self.ops.is_empty()
    }

    /// Rebuild state recovered from a store (before any connection is opened). Sessions come
    /// back disconnected: a session that was connected when the broker stopped is taken as
    /// disconnected at `now`, and its will (if any) is scheduled from `now` with its delay.
    /// Sessions and messages that expired are dropped when their timers fire
    /// ([`Broker::handle_timeout`]) or, for queued messages, when they would be sent.
    pub fn restore(&mut self, now: Instant, state: Restored) {
        for m in state.retained {
            if !m.topic.as_str().starts_with("$SYS") {
                // a retained topic's last value is known at once after a restart (the page
                // shows it before the device speaks again)
                let ts = m
                    .origin
                    .as_ref()
                    .map_or_else(|| self.wall_ms(now), |o| o.received_ms);
                self.last.record(&std::sync::Arc::new(m.clone()), ts);
                self.retained.set(m, 0);
            }
        }
        for rs in state.sessions {
            let h = rs.header;
            if h.expiry_interval == 0 || self.by_client_id.contains_key(&h.client_id) {
                continue;
            }
            let mut s = Session::new(h.client_id.clone(), h.protocol);
            s.username = h.username;
            s.expiry_interval = h.expiry_interval;
            s.disconnected_at = Some(h.disconnected_at.unwrap_or(now));
            s.will = h.will.map(|w| {
                let at = h.will_at.unwrap_or_else(|| {
                    now + Duration::from_secs(u64::from(
                        w.properties.will_delay_interval.unwrap_or(0),
                    ))
                });
                Box::new(crate::session::Will {
                    will: w,
                    at: Some(at),
                })
            });
            s.persisted = self.persist;
            if !rs.inbound_qos2.is_empty() {
                *s.inbound_qos2.make_mut() = rs.inbound_qos2.into_iter().collect();
            }
            let mut deliveries = rs.deliveries;
            deliveries.sort_by_key(|d| d.seq);
            for d in deliveries {
                self.next_seq = self.next_seq.max(d.seq + 1);
                self.next_msg_id = self.next_msg_id.max(d.msg_id + 1);
                let delivery = Delivery {
                    msg: d.msg,
                    qos: d.qos,
                    retain: d.retain,
                    sub_ids: d.sub_ids,
                    share: None,
                    seq: d.seq,
                    msg_id: d.msg_id,
                };
                let (packet_id, state) = match d.state {
                    DeliveryState::Queued => {
                        let f = s.flow_mut();
                        f.queued_bytes += delivery.msg.payload.len();
                        f.queue.push_back(delivery);
                        continue;
                    }
                    DeliveryState::AwaitPubAck(id) => (id, OutState::AwaitPubAck),
                    DeliveryState::AwaitPubRec(id) => (id, OutState::AwaitPubRec),
                    DeliveryState::AwaitPubComp(id) => (id, OutState::AwaitPubComp),
                };
                s.next_packet_id = packet_id.checked_add(1).unwrap_or(1);
                s.flow_mut().inflight.push_back(InFlight {
                    packet_id,
                    state,
                    delivery,
                    // re-sent (and counted) when the session resumes
                    sent: true,
                });
            }
            let subs = rs.subscriptions;
            let sid = self.insert_session(s);
            for (raw, options, identifier) in subs {
                let Ok(filter) = midge_codec::TopicFilter::new(raw.clone()) else {
                    continue;
                };
                self.tree.insert(
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
                        raw,
                        SubRecord {
                            options,
                            identifier,
                        },
                    );
                }
            }
        }
        // every timer of what came back: delayed wills, session and retained expiry
        for i in 0..self.sessions.len() {
            self.arm_session(crate::SessionId(i as u32));
        }
        if let Some(at) = self.retained.earliest_expiry() {
            self.arm_retained(at);
        }
    }

    /// Whether changes to this session are described as ops.
    pub(crate) fn persisted(&self, sid: SessionId) -> bool {
        self.persist && self.session(sid).is_some_and(|s| s.persisted)
    }

    /// Store the session's header (after connect, disconnect, will changes).
    pub(crate) fn persist_header(&mut self, sid: SessionId) {
        if !self.persisted(sid) {
            return;
        }
        let Some(s) = self.session(sid) else { return };
        let h = SessionHeader {
            client_id: s.client_id.clone(),
            username: s.username.clone(),
            protocol: s.protocol,
            expiry_interval: s.expiry_interval,
            will: s.will.as_ref().map(|w| w.will.clone()),
            will_at: s.will_at(),
            disconnected_at: s.disconnected_at,
        };
        self.ops.push(StoreOp::Session(Box::new(h)));
    }

    /// After a CONNECT set the session's expiry: start, continue or stop storing it.
    pub(crate) fn persist_connected(&mut self, sid: SessionId) {
        if !self.persist {
            return;
        }
        let Some(s) = self.session_mut(sid) else {
            return;
        };
        let was = s.persisted;
        let now = s.expiry_interval != 0;
        s.persisted = now;
        match (was, now) {
            (true, false) => {
                let id = s.client_id.clone();
                self.ops.push(StoreOp::SessionDelete(id));
            }
            (false, true) => {
                // a session becoming durable: everything it holds is written
                self.persist_header(sid);
                let Some(s) = self.session(sid) else { return };
                let subs: Vec<StoreOp> = s
                    .subscriptions
                    .get()
                    .into_iter()
                    .flatten()
                    .map(|(f, r)| StoreOp::Subscribe {
                        client_id: s.client_id.clone(),
                        filter: f.clone(),
                        options: r.options,
                        identifier: r.identifier,
                    })
                    .collect();
                self.ops.extend(subs);
                self.persist_all_deliveries(sid);
            }
            (true, true) => self.persist_header(sid),
            (false, false) => {}
        }
    }

    fn persist_all_deliveries(&mut self, sid: SessionId) {
        let Some(s) = self.session_mut(sid) else {
            return;
        };
        let Some(flow) = s.flow_mut_if_any() else {
            return;
        };
        let mut inflight = std::mem::take(&mut flow.inflight);
        let mut queue = std::mem::take(&mut flow.queue);
        for f in inflight.iter_mut() {
            f.delivery.seq = 0;
            f.delivery.msg_id = 0;
            let state = inflight_state(f);
            self.persist_delivery(sid, &mut f.delivery, state);
        }
        for d in queue.iter_mut() {
            d.seq = 0;
            d.msg_id = 0;
            self.persist_delivery(sid, d, DeliveryState::Queued);
        }
        if let Some(s) = self.session_mut(sid) {
            let flow = s.flow_mut();
            flow.inflight = inflight;
            flow.queue = queue;
        }
    }

    /// Store a delivery's creation or new state. A delivery not yet stored gets its
    /// sequence number here, and its message body is stored unless it was just stored for
    /// another session.
    pub(crate) fn persist_delivery(
        &mut self,
        sid: SessionId,
        d: &mut Delivery,
        state: DeliveryState,
    ) {
        if !self.persisted(sid) {
            return;
        }
        let Some(client_id) = self.session(sid).map(|s| s.client_id.clone()) else {
            return;
        };
        if d.seq == 0 {
            d.seq = self.next_seq;
            self.next_seq += 1;
        }
        let msg_id = match &self.last_msg {
            _ if d.msg_id != 0 => d.msg_id,
            Some((m, id)) if Arc::ptr_eq(m, &d.msg) => *id,
            _ => {
                let id = self.next_msg_id;
                self.next_msg_id += 1;
                self.ops.push(StoreOp::Message {
                    id,
                    msg: d.msg.clone(),
                });
                self.last_msg = Some((d.msg.clone(), id));
                id
            }
        };
        d.msg_id = msg_id;
        self.ops.push(StoreOp::Delivery {
            client_id,
            seq: d.seq,
            msg: msg_id,
            qos: d.qos,
            retain: d.retain,
            sub_ids: d.sub_ids.clone(),
            state,
        });
    }

    /// A stored delivery ended.
    pub(crate) fn persist_delivery_gone(&mut self, sid: SessionId, seq: u64) {
        if seq == 0 || !self.persisted(sid) {
            return;
        }
        let Some(s) = self.session(sid) else { return };
        self.ops.push(StoreOp::DeliveryDelete {
            client_id: s.client_id.clone(),
            seq,
        });
    }

    pub(crate) fn persist_subscribe(&mut self, sid: SessionId, filter: &ByteString, r: SubRecord) {
        if !self.persisted(sid) {
            return;
        }
        let Some(s) = self.session(sid) else { return };
        self.ops.push(StoreOp::Subscribe {
            client_id: s.client_id.clone(),
            filter: filter.clone(),
            options: r.options,
            identifier: r.identifier,
        });
    }

    pub(crate) fn persist_unsubscribe(&mut self, sid: SessionId, filter: &ByteString) {
        if !self.persisted(sid) {
            return;
        }
        let Some(s) = self.session(sid) else { return };
        self.ops.push(StoreOp::Unsubscribe {
            client_id: s.client_id.clone(),
            filter: filter.clone(),
        });
    }

    pub(crate) fn persist_inbound_qos2(&mut self, sid: SessionId, packet_id: u16, pending: bool) {
        if !self.persisted(sid) {
            return;
        }
        let Some(s) = self.session(sid) else { return };
        self.ops.push(StoreOp::InboundQos2 {
            client_id: s.client_id.clone(),
            packet_id,
            pending,
        });
    }

    /// The session ends: drop it from the store.
    pub(crate) fn persist_session_end(&mut self, s: &Session) {
        if self.persist && s.persisted {
            self.ops.push(StoreOp::SessionDelete(s.client_id.clone()));
        }
    }

    /// The retained message of a topic changed (`$SYS` is regenerated, never stored).
    pub(crate) fn persist_retain(&mut self, topic: &ByteString, msg: Option<Arc<Message>>) {
        if self.persist && !topic.starts_with("$SYS") {
            self.ops.push(StoreOp::Retain {
                topic: topic.clone(),
                msg,
            });
        }
    }
}

/// The stored state of an in-flight entry.
pub(crate) fn inflight_state(f: &InFlight) -> DeliveryState {
    match f.state {
        OutState::AwaitPubAck => DeliveryState::AwaitPubAck(f.packet_id),
        OutState::AwaitPubRec => DeliveryState::AwaitPubRec(f.packet_id),
        OutState::AwaitPubComp => DeliveryState::AwaitPubComp(f.packet_id),
    }
}
