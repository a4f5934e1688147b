//! The live records: for every key (session header, subscription, delivery, message body,
//! inbound QoS 2 id, retained topic) the latest record's bytes. Replaying the log fills it;
//! compaction writes it out; message bodies are reference counted by their deliveries.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use bytestring::ByteString;
use midge_core::StoreOp;

use crate::record::Rec;

/// What a record does to the live set.
#[derive(Debug, Clone)]
pub(crate) enum Key {
    Session(ByteString),
    SessionDelete(ByteString),
    Sub(ByteString, ByteString),
    Unsub(ByteString, ByteString),
    Msg(u64),
    Delivery(ByteString, u64, u64),
    DeliveryDelete(ByteString, u64),
    Qos2(ByteString, u16, bool),
    Retain(ByteString, bool),
}

impl Key {
    pub(crate) fn of_op(op: &StoreOp) -> Key {
        match op {
            StoreOp::Session(h) => Key::Session(h.client_id.clone()),
            StoreOp::SessionDelete(c) => Key::SessionDelete(c.clone()),
            StoreOp::Subscribe {
                client_id, filter, ..
            } => Key::Sub(client_id.clone(), filter.clone()),
            StoreOp::Unsubscribe { client_id, filter } => {
                Key::Unsub(client_id.clone(), filter.clone())
            }
            StoreOp::Message { id, .. } => Key::Msg(*id),
            StoreOp::Delivery {
                client_id,
                seq,
                msg,
                ..
            } => Key::Delivery(client_id.clone(), *seq, *msg),
            StoreOp::DeliveryDelete { client_id, seq } => {
                Key::DeliveryDelete(client_id.clone(), *seq)
            }
            StoreOp::InboundQos2 {
                client_id,
                packet_id,
                pending,
            } => Key::Qos2(client_id.clone(), *packet_id, *pending),
            StoreOp::Retain { topic, msg } => Key::Retain(topic.clone(), msg.is_some()),
        }
    }

    pub(crate) fn of_rec(rec: &Rec) -> Key {
        match rec {
            Rec::Session { client_id, .. } => Key::Session(client_id.clone()),
            Rec::SessionDelete(c) => Key::SessionDelete(c.clone()),
            Rec::Subscribe {
                client_id, filter, ..
            } => Key::Sub(client_id.clone(), filter.clone()),
            Rec::Unsubscribe { client_id, filter } => Key::Unsub(client_id.clone(), filter.clone()),
            Rec::Message { id, .. } => Key::Msg(*id),
            Rec::Delivery {
                client_id,
                seq,
                msg,
                ..
            } => Key::Delivery(client_id.clone(), *seq, *msg),
            Rec::DeliveryDelete { client_id, seq } => Key::DeliveryDelete(client_id.clone(), *seq),
            Rec::Qos2 {
                client_id,
                packet_id,
                pending,
            } => Key::Qos2(client_id.clone(), *packet_id, *pending),
            Rec::Retain { topic, msg } => Key::Retain(topic.clone(), msg.is_some()),
        }
    }
}

#[derive(Debug, Default, Clone)]
pub(crate) struct Client {
    pub(crate) header: Option<Bytes>,
    pub(crate) subs: HashMap<ByteString, Bytes>,
    /// seq -> (message id, record)
    pub(crate) deliveries: BTreeMap<u64, (u64, Bytes)>,
    pub(crate) qos2: BTreeMap<u16, Bytes>,
}

#[derive(Debug, Default, Clone)]
pub(crate) struct State {
    pub(crate) clients: HashMap<ByteString, Client>,
    /// id -> (deliveries referring to it, record)
    pub(crate) msgs: HashMap<u64, (u32, Bytes)>,
    pub(crate) retained: HashMap<ByteString, Bytes>,
    /// Bytes of all live records (what a compacted file holds after its header).
    pub(crate) live: u64,
}

fn len(b: &Bytes) -> u64 {
    b.len() as u64
}

impl State {
    fn deref_msg(&mut self, id: u64) {
        let gone = match self.msgs.get_mut(&id) {
            Some((refs, _)) => {
                *refs = refs.saturating_sub(1);
                *refs == 0
            }
            None => false,
        };
        if gone {
            if let Some((_, b)) = self.msgs.remove(&id) {
                self.live -= len(&b);
            }
        }
    }

    /// Remove a client and everything it holds.
    pub(crate) fn remove_client(&mut self, client: &str) {
        let Some(c) = self.clients.remove(client) else {
            return;
        };
        let mut freed = c.header.as_ref().map_or(0, len);
        freed += c.subs.values().map(len).sum::<u64>();
        freed += c.qos2.values().map(len).sum::<u64>();
        for (msg, b) in c.deliveries.values() {
            freed += len(b);
            self.deref_msg(*msg);
        }
        self.live -= freed;
    }

    /// Remove one delivery.
    pub(crate) fn remove_delivery(&mut self, client: &str, seq: u64) {
        let Some(c) = self.clients.get_mut(client) else {
            return;
        };
        if let Some((msg, b)) = c.deliveries.remove(&seq) {
            self.live -= len(&b);
            self.deref_msg(msg);
        }
    }

    /// Apply one record (its framed bytes) to the live set.
    pub(crate) fn apply(&mut self, key: Key, rec: Bytes) {
        let n = len(&rec);
        match key {
            Key::Session(c) => {
                let client = self.clients.entry(c).or_default();
                if let Some(old) = client.header.replace(rec) {
                    self.live -= len(&old);
                }
                self.live += n;
            }
            Key::SessionDelete(c) => self.remove_client(&c),
            Key::Sub(c, f) => {
                let client = self.clients.entry(c).or_default();
                if let Some(old) = client.subs.insert(f, rec) {
                    self.live -= len(&old);
                }
                self.live += n;
            }
            Key::Unsub(c, f) => {
                if let Some(old) = self.clients.get_mut(&c).and_then(|cl| cl.subs.remove(&f)) {
                    self.live -= len(&old);
                }
            }
            Key::Msg(id) => {
                let entry = self.msgs.entry(id).or_insert((0, Bytes::new()));
                self.live -= len(&entry.1);
                entry.1 = rec;
                self.live += n;
            }
            Key::Delivery(c, seq, msg) => {
                // a delivery whose body is unknown (lost with a failed write) is skipped
                let Some(m) = self.msgs.get_mut(&msg) else {
                    return;
                };
                m.0 += 1;
                let client = self.clients.entry(c).or_default();
                let old = client.deliveries.insert(seq, (msg, rec));
                self.live += n;
                if let Some((old_msg, old_rec)) = old {
                    self.live -= len(&old_rec);
                    self.deref_msg(old_msg);
                }
            }
            Key::DeliveryDelete(c, seq) => self.remove_delivery(&c, seq),
            Key::Qos2(c, pid, pending) => {
                if pending {
                    let client = self.clients.entry(c).or_default();
                    if let Some(old) = client.qos2.insert(pid, rec) {
                        self.live -= len(&old);
                    }
                    self.live += n;
                } else if let Some(old) =
                    self.clients.get_mut(&c).and_then(|cl| cl.qos2.remove(&pid))
                {
                    self.live -= len(&old);
                }
            }
            Key::Retain(t, set) => {
                let old = if set {
                    self.live += n;
                    self.retained.insert(t, rec)
                } else {
                    self.retained.remove(&t)
                };
                if let Some(old) = old {
                    self.live -= len(&old);
                }
            }
        }
    }

    /// Drop what cannot be restored (clients without a header, unreferenced bodies).
    pub(crate) fn tidy(&mut self) {
        let orphans: Vec<ByteString> = self
            .clients
            .iter()
            .filter(|(_, c)| c.header.is_none())
            .map(|(k, _)| k.clone())
            .collect();
        for c in orphans {
            self.remove_client(&c);
        }
        let unused: Vec<u64> = self
            .msgs
            .iter()
            .filter(|(_, (refs, _))| *refs == 0)
            .map(|(k, _)| *k)
            .collect();
        for id in unused {
            if let Some((_, b)) = self.msgs.remove(&id) {
                self.live -= len(&b);
            }
        }
    }

    /// Every live record in an order that replays correctly: bodies before the deliveries
    /// that refer to them.
    pub(crate) fn records(&self) -> impl Iterator<Item = &Bytes> {
        let msgs = self.msgs.values().map(|(_, b)| b);
        let clients = self.clients.values().flat_map(|c| {
            c.header
                .iter()
                .chain(c.subs.values())
                .chain(c.deliveries.values().map(|(_, b)| b))
                .chain(c.qos2.values())
        });
        msgs.chain(clients).chain(self.retained.values())
    }
}
