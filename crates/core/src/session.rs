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
}

/// A subscription as the session remembers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SubRecord {
    pub(crate) options: SubscriptionOptions,
    pub(crate) identifier: Option<u32>,
}

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
    pub(crate) subscriptions: AHashMap<ByteString, SubRecord>,
    pub(crate) inflight: VecDeque<InFlight>,
    pub(crate) queue: VecDeque<Delivery>,
    pub(crate) queued_bytes: usize,
    pub(crate) next_packet_id: u16,
    /// Inbound QoS 2 packet ids received and not yet released (PUBREL).
    pub(crate) inbound_qos2: AHashSet<u16>,
    /// Boxed: most sessions have none, and an inline will would cost every session ~240 B.
    pub(crate) will: Option<Box<LastWill>>,
    pub(crate) will_at: Option<Instant>,
    /// The client's Receive Maximum (how many QoS 1/2 it takes at once).
    pub(crate) client_receive_maximum: u16,
    /// The client's Maximum Packet Size.
    pub(crate) client_max_packet: u32,
    pub(crate) dropped: u64,
    /// Whether its changes are stored (persistence on and expiry not 0).
    pub(crate) persisted: bool,
}

impl Session {
    pub(crate) fn new(client_id: ByteString, protocol: Protocol) -> Session {
        Session {
            client_id,
            username: None,
            listener: 0,
            conn: None,
            protocol,
            expiry_interval: 0,
            disconnected_at: None,
            subscriptions: AHashMap::new(),
            inflight: VecDeque::new(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            next_packet_id: 1,
            inbound_qos2: AHashSet::new(),
            will: None,
            will_at: None,
            client_receive_maximum: u16::MAX,
            client_max_packet: u32::MAX,
            dropped: 0,
            persisted: false,
        }
    }

    /// A packet identifier not used by any in-flight message. Ids are allocated in cyclic
    /// order and `inflight` is kept in allocation order, so every id in flight lies in the
    /// cyclic interval [front, back]; a candidate outside it is free without a scan.
    pub(crate) fn alloc_packet_id(&mut self) -> u16 {
        loop {
            let id = self.next_packet_id;
            self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
            let free = match (self.inflight.front(), self.inflight.back()) {
                (Some(front), Some(back)) => {
                    let span = back.packet_id.wrapping_sub(front.packet_id);
                    let offset = id.wrapping_sub(front.packet_id);
                    offset > span || !self.inflight.iter().any(|f| f.packet_id == id)
                }
                _ => true,
            };
            if free {
                return id;
            }
        }
    }

    pub(crate) fn inflight_position(&self, packet_id: u16) -> Option<usize> {
        self.inflight.iter().position(|f| f.packet_id == packet_id)
    }
}
