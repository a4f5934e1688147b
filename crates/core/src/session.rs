//! Sessions outlive connections: subscriptions, in-flight and queued messages, inbound QoS 2
//! state, the will.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use ahash::{AHashMap, AHashSet};
use bytestring::ByteString;
use midge_codec::{LastWill, Protocol, QoS, SubscriptionOptions};

use crate::{ConnId, Message};

/// A message on its way to one session.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    pub(crate) msg: Arc<Message>,
    pub(crate) qos: QoS,
    pub(crate) retain: bool,
    pub(crate) sub_ids: Vec<u32>,
    /// The share group (filter, group name) it was routed through, if any.
    pub(crate) share: Option<Arc<(Box<str>, Box<str>)>>,
    /// Sequence number in the store (0 = not stored).
    pub(crate) seq: u64,
    /// Its body's id in the store (0 = not stored).
    pub(crate) msg_id: u64,
}

/// Where an outgoing QoS 1/2 message is in its flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::enum_variant_names)] // named after the packet awaited
pub(crate) enum OutState {
    /// QoS 1 PUBLISH sent, waiting for PUBACK.
    AwaitPubAck,
    /// QoS 2 PUBLISH sent, waiting for PUBREC.
    AwaitPubRec,
    /// PUBREL sent, waiting for PUBCOMP.
    AwaitPubComp,
}

#[derive(Debug, Clone)]
pub(crate) struct InFlight {
    pub(crate) packet_id: u16,
    pub(crate) state: OutState,
    pub(crate) delivery: Delivery,
    /// Whether it went out on the current connection. After a resume only the client's
    /// Receive Maximum of them are re-sent at once; the rest wait, keeping their packet
    /// ids [MQTT-4.4.0-1], until acknowledgements open the window [MQTT-3.3.4-9].
    pub(crate) sent: bool,
}

/// A subscription as the session remembers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SubRecord {
    pub(crate) options: SubscriptionOptions,
    pub(crate) identifier: Option<u32>,
}

/// A part of a session that most sessions never use, allocated on first use: an idle
/// session pays 8 bytes for it instead of the whole collection.
#[derive(Debug)]
pub(crate) struct Lazy<T>(Option<Box<T>>);

impl<T> Default for Lazy<T> {
    fn default() -> Self {
        Lazy(None)
    }
}

impl<T> Lazy<T> {
    /// The part, if it was ever used.
    pub(crate) fn get(&self) -> Option<&T> {
        self.0.as_deref()
    }

    /// The part, if it was ever used, to change.
    pub(crate) fn get_mut(&mut self) -> Option<&mut T> {
        self.0.as_deref_mut()
    }
}

impl<T: Default> Lazy<T> {
    /// The part, allocated now if this is its first use.
    pub(crate) fn make_mut(&mut self) -> &mut T {
        self.0.get_or_insert_with(Box::default)
    }
}

/// The messages of a session: in flight to its client and waiting for it.
#[derive(Debug, Default)]
pub(crate) struct Flow {
    pub(crate) inflight: VecDeque<InFlight>,
    pub(crate) queue: VecDeque<Delivery>,
    /// Payload bytes in `queue`.
    pub(crate) queued_bytes: usize,
    /// Entries of `inflight` not sent on the current connection (`sent == false`).
    pub(crate) unsent: usize,
}

impl Flow {
    /// Take an in-flight entry out, keeping the count of unsent ones.
    pub(crate) fn remove(&mut self, pos: usize) -> Option<InFlight> {
        let f = self.inflight.remove(pos)?;
        if !f.sent {
            self.unsent -= 1;
        }
        Some(f)
    }

    /// Mark the entry at `pos` as sent (or known to the client).
    pub(crate) fn mark_sent(&mut self, pos: usize) {
        if let Some(f) = self.inflight.get_mut(pos) {
            if !f.sent {
                f.sent = true;
                self.unsent -= 1;
            }
        }
    }

    /// Entries that count against the client's Receive Maximum: sent and not yet
    /// acknowledged.
    pub(crate) fn outstanding(&self) -> usize {
        self.inflight.len() - self.unsent
    }

    /// Recount `unsent` after `inflight` was rebuilt.
    pub(crate) fn recount(&mut self) {
        self.unsent = self.inflight.iter().filter(|f| !f.sent).count();
    }
}

/// What [`Session::flow`] shows for a session that never had a message.
static NO_FLOW: Flow = Flow {
    inflight: VecDeque::new(),
    queue: VecDeque::new(),
    queued_bytes: 0,
    unsent: 0,
};

/// A session's will and, once its connection ended, when it is due.
#[derive(Debug)]
pub(crate) struct Will {
    pub(crate) will: LastWill,
    /// When it is published (set when the connection ends with a will delay).
    pub(crate) at: Option<Instant>,
}

/// One session. Kept small (a test bounds it): every connected client has one, and most
/// have no subscriptions, messages, QoS 2 state or will, so those are [`Lazy`] or boxed.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) client_id: ByteString,
    pub(crate) username: Option<ByteString>,
    /// Listener of its latest connection (for the authorizer).
    pub(crate) listener: u16,
    pub(crate) conn: Option<ConnId>,
    pub(crate) protocol: Protocol,
    /// Seconds the session lives after its connection closes (`u32::MAX` = forever).
    pub(crate) expiry_interval: u32,
    pub(crate) disconnected_at: Option<Instant>,
    /// Raw filter (with any `$share/g/` prefix) to its options.
    pub(crate) subscriptions: Lazy<AHashMap<ByteString, SubRecord>>,
    /// In-flight and queued messages (see [`Session::flow`]).
    flow: Lazy<Flow>,
    pub(crate) next_packet_id: u16,
    /// Inbound QoS 2 packet ids received and not yet released (PUBREL).
    pub(crate) inbound_qos2: Lazy<AHashSet<u16>>,
    /// Boxed: most sessions have none, and an inline will would cost every session ~240 B.
    pub(crate) will: Option<Box<Will>>,
    /// The client's Receive Maximum (how many QoS 1/2 it takes at once).
    pub(crate) client_receive_maximum: u16,
    /// The client's Maximum Packet Size.
    pub(crate) client_max_packet: u32,
    /// Whether its changes are stored (persistence on and expiry not 0).
    pub(crate) persisted: bool,
}

impl Session {
    pub(crate) fn new(client_id: ByteString, protocol: Protocol) -> Session {
        Session {
            username: None,
            listener: 0,
            conn: None,
            protocol,
            expiry_interval: 0,
            disconnected_at: None,
            subscriptions: Lazy::default(),
            flow: Lazy::default(),
            next_packet_id: 1,
            inbound_qos2: Lazy::default(),
            will: None,
            client_receive_maximum: u16::MAX,
            client_max_packet: u32::MAX,
            persisted: false,
            client_id,
        }
    }

    /// Whether it is one of the server's own in-process clients (only they may use
    /// [`crate::INTERNAL_CLIENT_ID_PREFIX`]; kept as the id, not a field, to keep the record
    /// small).
    pub(crate) fn is_internal(&self) -> bool {
        self.client_id.starts_with(crate::INTERNAL_CLIENT_ID_PREFIX)
    }

    /// How many QoS 1/2 messages may be unacknowledged at once: the client's Receive
    /// Maximum, capped by ours except for the server's own clients.
    pub(crate) fn window(&self, max_inflight: u16) -> usize {
        if self.is_internal() {
            usize::from(self.client_receive_maximum)
        } else {
            usize::from(max_inflight.min(self.client_receive_maximum))
        }
    }

    /// Its in-flight and queued messages (empty for a session that never had any).
    pub(crate) fn flow(&self) -> &Flow {
        self.flow.get().unwrap_or(&NO_FLOW)
    }

    /// Its in-flight and queued messages, to change (allocated on first use).
    pub(crate) fn flow_mut(&mut self) -> &mut Flow {
        self.flow.make_mut()
    }

    /// Its in-flight and queued messages to change, if it ever had any.
    pub(crate) fn flow_mut_if_any(&mut self) -> Option<&mut Flow> {
        self.flow.get_mut()
    }

    /// When its pending will is due, if it has one scheduled.
    pub(crate) fn will_at(&self) -> Option<Instant> {
        self.will.as_ref().and_then(|w| w.at)
    }

    /// A packet identifier not used by any in-flight message. Ids are allocated in cyclic
    /// order and `inflight` is kept in allocation order, so every id in flight lies in the
    /// cyclic interval [front, back]; a candidate outside it is free without a scan.
    pub(crate) fn alloc_packet_id(&mut self) -> u16 {
        loop {
            let id = self.next_packet_id;
            self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
            let inflight = &self.flow().inflight;
            let free = match (inflight.front(), inflight.back()) {
                (Some(front), Some(back)) => {
                    let span = back.packet_id.wrapping_sub(front.packet_id);
                    let offset = id.wrapping_sub(front.packet_id);
                    offset > span || !inflight.iter().any(|f| f.packet_id == id)
                }
                _ => true,
            };
            if free {
                return id;
            }
        }
    }

    pub(crate) fn inflight_position(&self, packet_id: u16) -> Option<usize> {
        self.flow()
            .inflight
            .iter()
            .position(|f| f.packet_id == packet_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every connected client has a session, most of them idle: keep the record small
    /// (it was 344 B with its collections inline).
    #[test]
    fn an_idle_session_record_stays_small() {
        let size = std::mem::size_of::<Session>();
        assert!(size <= 144, "Session is {size} B");
        assert_eq!(std::mem::size_of::<Option<Session>>(), size);
    }

    /// The session table grows by a quarter, not by doubling: its slack is paid for by
    /// every idle client (up to 144 B each when doubling).
    #[test]
    fn the_session_table_keeps_little_slack() {
        let mut broker = crate::Broker::new(crate::Config::default());
        let now = std::time::Instant::now();
        let mut out = Vec::new();
        for i in 0..5000u64 {
            let conn = crate::ConnId(i + 1);
            broker.open(conn);
            let connect = midge_codec::Connect::new(Protocol::V311, format!("c{i}"));
            broker.handle(
                now,
                conn,
                midge_codec::Packet::Connect(Box::new(connect)),
                &mut out,
            );
            out.clear();
            let (len, cap) = (broker.sessions.len(), broker.sessions.capacity());
            assert!(cap <= len + len / 4 + 16, "{len} sessions in {cap} slots");
        }
        assert_eq!(broker.sessions.len(), 5000);
    }

    #[test]
    fn a_new_session_allocates_no_collection_until_used() {
        let mut s = Session::new("c".into(), Protocol::V5);
        assert!(s.subscriptions.get().is_none() && s.inbound_qos2.get().is_none());
        assert!(s.flow.get().is_none() && s.flow().queue.is_empty());
        assert_eq!(s.alloc_packet_id(), 1);
        assert!(s.flow.get().is_none(), "allocating an id needs no flow");
        s.flow_mut().queued_bytes = 3;
        assert_eq!(s.flow().queued_bytes, 3);
    }
}
