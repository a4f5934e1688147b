//! The sans-I/O protocol state of one client session: packet identifiers, in-flight QoS 1/2
//! flows in both directions, the server's receive maximum, keepalive bookkeeping and
//! redelivery after a reconnect. Packets go in through [`MqttState::handle_packet`] and the
//! request methods; packets to write come out of [`MqttState::outbox`] and events for the
//! application out of [`MqttState::pop_event`]. No sockets, no clock.

use std::collections::{HashMap, HashSet, VecDeque};

use midge_codec::{
    ConnAck, Disconnect, Packet, Protocol, PubAck, Publish, QoS, ReasonCode, Subscribe, Unsubscribe,
};

use crate::event::Event;

/// A protocol violation by the server, or a request the state cannot take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The server refused the connection in its CONNACK.
    #[error("connection refused: {0}")]
    Refused(ReasonCode),
    /// The server sent a packet a server must never send (CONNECT, SUBSCRIBE, ...).
    #[error("unexpected {0} from the server")]
    UnexpectedPacket(&'static str),
    /// A second CONNACK on the same connection.
    #[error("duplicate CONNACK")]
    DuplicateConnAck,
    /// All 65,535 packet identifiers are in use.
    #[error("no free packet identifier")]
    NoPacketId,
    /// The server sent more QoS 2 publishes than our receive maximum allows.
    #[error("server exceeded the receive maximum")]
    ReceiveMaximumExceeded,
}

/// An outgoing QoS 1/2 flow waiting for the server.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // the common variant is the large one
enum Outgoing {
    /// PUBLISH sent (or queued), waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    Publish {
        publish: Publish,
        seq: u64,
        sent: bool,
    },
    /// PUBREL sent, waiting for PUBCOMP.
    PubRel { seq: u64 },
}

impl Outgoing {
    fn seq(&self) -> u64 {
        match self {
            Outgoing::Publish { seq, .. } | Outgoing::PubRel { seq } => *seq,
        }
    }
}

/// The protocol state of one client session (survives reconnects).
#[derive(Debug)]
pub struct MqttState {
    protocol: Protocol,
    next_pid: u16,
    seq: u64,
    outgoing: HashMap<u16, Outgoing>,
    /// SUBSCRIBE / UNSUBSCRIBE packet ids waiting for their ack.
    requests: HashSet<u16>,
    /// QoS 2 packet ids received and PUBREC'd, waiting for PUBREL (with the message when it
    /// is delivered on PUBREL).
    incoming_qos2: HashMap<u16, Option<Publish>>,
    /// Deliver incoming QoS 2 messages when their PUBREL arrives (as mosquitto's library
    /// does) instead of when the PUBLISH arrives.
    deliver_qos2_on_pubrel: bool,
    /// Incoming QoS 1/2 messages are acknowledged by [`MqttState::ack`], not on arrival.
    manual_acks: bool,
    /// QoS 2 packet ids delivered to the application whose PUBREC waits for its ack.
    awaiting_ack: HashSet<u16>,
    /// QoS 1/2 publishes waiting for send quota (server receive maximum).
    pending: VecDeque<Publish>,
    /// The server's receive maximum (65,535 unless its CONNACK says less).
    send_quota: u16,
    /// Our own cap on outgoing flows in flight.
    max_inflight: u16,
    /// Our own receive maximum (what we told the server), for QoS 2 bookkeeping.
    receive_maximum: u16,
    connected: bool,
    ping_outstanding: bool,
    outbox: VecDeque<Packet>,
    events: VecDeque<Event>,
}

impl MqttState {
    /// A fresh session for a connection speaking `protocol`.
    pub fn new(protocol: Protocol) -> MqttState {
        MqttState {
            protocol,
            next_pid: 1,
            seq: 0,
            outgoing: HashMap::new(),
            requests: HashSet::new(),
            incoming_qos2: HashMap::new(),
            deliver_qos2_on_pubrel: false,
            manual_acks: false,
            awaiting_ack: HashSet::new(),
            pending: VecDeque::new(),
            send_quota: u16::MAX,
            max_inflight: u16::MAX,
            receive_maximum: u16::MAX,
            connected: false,
            ping_outstanding: false,
            outbox: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The protocol level of the session.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Set the receive maximum announced in our CONNECT (MQTT 5).
    pub fn set_receive_maximum(&mut self, max: u16) {
        self.receive_maximum = max.max(1);
    }

    /// Cap outgoing QoS 1/2 flows in flight at `max` (at least 1), below the server's receive
    /// maximum if that is smaller.
    pub fn set_max_inflight(&mut self, max: u16) {
        self.max_inflight = max.max(1);
        self.send_quota = self.send_quota.min(self.max_inflight);
    }

    /// Deliver incoming QoS 2 messages on PUBREL (mosquitto's behaviour) rather than on
    /// PUBLISH (the default, one round trip sooner). Both give exactly-once delivery.
    pub fn set_deliver_qos2_on_pubrel(&mut self, on: bool) {
        self.deliver_qos2_on_pubrel = on;
    }

    /// Acknowledge incoming QoS 1 and QoS 2 messages only when [`MqttState::ack`] is called
    /// (for QoS 2 the PUBREC waits; a redelivered duplicate is not acknowledged separately).
    /// Does not apply to QoS 2 delivered on PUBREL, which is acknowledged before delivery.
    pub fn set_manual_acks(&mut self, on: bool) {
        self.manual_acks = on;
    }

    /// The application is done with the incoming message `packet_id` of `qos`: queue its
    /// PUBACK (QoS 1) or PUBREC (QoS 2). Does nothing for QoS 0 or an id not awaiting one.
    pub fn ack(&mut self, qos: QoS, packet_id: u16) {
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                if self.connected {
                    self.outbox
                        .push_back(Packet::PubAck(PubAck::new(packet_id)));
                }
            }
            QoS::ExactlyOnce => {
                if self.awaiting_ack.remove(&packet_id) && self.connected {
                    self.outbox
                        .push_back(Packet::PubRec(PubAck::new(packet_id)));
                }
            }
        }
    }

    /// Whether a CONNACK was accepted on the current connection.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Packets waiting to be written, oldest first.
    pub fn outbox(&mut self) -> &mut VecDeque<Packet> {
        &mut self.outbox
    }

    /// The next event for the application.
    pub fn pop_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Whether events are waiting for the application.
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// Queue an event for the application (used by the I/O layer).
    pub(crate) fn push_event(&mut self, event: Event) {
        self.events.push_back(event);
    }

    /// Number of outgoing QoS 1/2 flows in flight (they count against the send quota).
    pub fn inflight(&self) -> usize {
        self.outgoing.len()
    }

    /// Number of QoS 1/2 publishes waiting for send quota.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Whether a PINGREQ is waiting for its PINGRESP.
    pub fn ping_outstanding(&self) -> bool {
        self.ping_outstanding
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn alloc_pid(&mut self) -> Result<u16, StateError> {
        for _ in 0..u16::MAX {
            let pid = self.next_pid;
            self.next_pid = if self.next_pid == u16::MAX {
                1
            } else {
                self.next_pid + 1
            };
            if !self.outgoing.contains_key(&pid) && !self.requests.contains(&pid) {
                return Ok(pid);
            }
        }
        Err(StateError::NoPacketId)
    }

    /// Queue a PUBLISH. QoS 0 goes straight to the outbox. QoS 1/2 gets a packet identifier
    /// and goes in flight, or waits while the server's receive maximum is used up. Returns the
    /// packet identifier given, if any yet. Any packet id set by the caller is replaced.
    pub fn publish(&mut self, mut publish: Publish) -> Result<Option<u16>, StateError> {
        if publish.qos == QoS::AtMostOnce {
            publish.packet_id = 0;
            if self.connected {
                self.outbox.push_back(Packet::Publish(publish));
            }
            return Ok(None);
        }
        if self.outgoing.len() >= usize::from(self.send_quota) || !self.pending.is_empty() {
            self.pending.push_back(publish);
            return Ok(None);
        }
        self.start_publish(publish).map(Some)
    }

    fn start_publish(&mut self, mut publish: Publish) -> Result<u16, StateError> {
        let pid = self.alloc_pid()?;
        publish.packet_id = pid;
        publish.dup = false;
        let seq = self.next_seq();
        let sent = self.connected;
        if sent {
            self.outbox.push_back(Packet::Publish(publish.clone()));
        }
        self.outgoing
            .insert(pid, Outgoing::Publish { publish, seq, sent });
        Ok(pid)
    }

    /// Move pending publishes into flight while the send quota allows.
    fn drain_pending(&mut self) -> Result<(), StateError> {
        while self.outgoing.len() < usize::from(self.send_quota) {
            let Some(p) = self.pending.pop_front() else {
                break;
            };
            self.start_publish(p)?;
        }
        Ok(())
    }

    /// Queue a SUBSCRIBE; returns its packet identifier.
    pub fn subscribe(&mut self, mut subscribe: Subscribe) -> Result<u16, StateError> {
        let pid = self.alloc_pid()?;
        subscribe.packet_id = pid;
        self.requests.insert(pid);
        self.outbox.push_back(Packet::Subscribe(subscribe));
        Ok(pid)
    }

    /// Queue an UNSUBSCRIBE; returns its packet identifier.
    pub fn unsubscribe(&mut self, mut unsubscribe: Unsubscribe) -> Result<u16, StateError> {
        let pid = self.alloc_pid()?;
        unsubscribe.packet_id = pid;
        self.requests.insert(pid);
        self.outbox.push_back(Packet::Unsubscribe(unsubscribe));
        Ok(pid)
    }

    /// Queue a DISCONNECT.
    pub fn disconnect(&mut self, disconnect: Disconnect) {
        self.outbox.push_back(Packet::Disconnect(disconnect));
    }

    /// Queue a PINGREQ.
    pub fn ping(&mut self) {
        self.ping_outstanding = true;
        self.outbox.push_back(Packet::PingReq);
    }

    /// The connection is gone: forget what was not written, keep the session's in-flight
    /// flows for redelivery.
    pub fn connection_lost(&mut self) {
        self.connected = false;
        self.ping_outstanding = false;
        self.outbox.clear();
        self.requests.clear();
    }

    /// Handle the CONNACK of a new connection. On success the in-flight flows of the session
    /// are queued again (PUBLISH with DUP set if it was sent before, PUBREL as is) in their
    /// original order, then pending publishes fill the server's receive maximum.
    pub fn handle_connack(&mut self, connack: &ConnAck) -> Result<(), StateError> {
        if self.connected {
            return Err(StateError::DuplicateConnAck);
        }
        if connack.reason.is_error() {
            return Err(StateError::Refused(connack.reason));
        }
        self.connected = true;
        self.ping_outstanding = false;
        let server_max = if self.protocol.is_v5() {
            connack
                .properties
                .receive_maximum
                .unwrap_or(u16::MAX)
                .max(1)
        } else {
            u16::MAX
        };
        self.send_quota = server_max.min(self.max_inflight);
        if !connack.session_present {
            self.incoming_qos2.clear();
            self.awaiting_ack.clear();
        }
        let mut flows: Vec<(u64, u16)> = self
            .outgoing
            .iter()
            .map(|(pid, o)| (o.seq(), *pid))
            .collect();
        flows.sort_unstable();
        for (_, pid) in flows {
            match self.outgoing.get_mut(&pid) {
                Some(Outgoing::Publish { publish, sent, .. }) => {
                    publish.dup = *sent;
                    *sent = true;
                    self.outbox.push_back(Packet::Publish(publish.clone()));
                }
                Some(Outgoing::PubRel { .. }) => {
                    self.outbox.push_back(Packet::PubRel(PubAck::new(pid)));
                }
                None => {}
            }
        }
        self.drain_pending()?;
        self.events.push_back(Event::Connected(connack.clone()));
        Ok(())
    }

    /// Handle a packet from the server (after CONNACK).
    pub fn handle_packet(&mut self, packet: Packet) -> Result<(), StateError> {
        match packet {
            Packet::Publish(p) => self.handle_publish(p)?,
            Packet::PubAck(ack) => {
                if let Some(Outgoing::Publish { publish, .. }) = self.outgoing.get(&ack.packet_id) {
                    if publish.qos == QoS::AtLeastOnce {
                        self.outgoing.remove(&ack.packet_id);
                        self.events.push_back(Event::Published {
                            packet_id: ack.packet_id,
                            qos: QoS::AtLeastOnce,
                            reason: ack.reason,
                        });
                        self.drain_pending()?;
                    }
                }
            }
            Packet::PubRec(ack) => match self.outgoing.get(&ack.packet_id) {
                Some(Outgoing::Publish { publish, seq, .. }) if publish.qos == QoS::ExactlyOnce => {
                    if ack.reason.is_error() {
                        self.outgoing.remove(&ack.packet_id);
                        self.events.push_back(Event::Published {
                            packet_id: ack.packet_id,
                            qos: QoS::ExactlyOnce,
                            reason: ack.reason,
                        });
                        self.drain_pending()?;
                    } else {
                        let seq = *seq;
                        self.outgoing
                            .insert(ack.packet_id, Outgoing::PubRel { seq });
                        self.outbox
                            .push_back(Packet::PubRel(PubAck::new(ack.packet_id)));
                    }
                }
                Some(Outgoing::PubRel { .. }) => {
                    self.outbox
                        .push_back(Packet::PubRel(PubAck::new(ack.packet_id)));
                }
                _ => {
                    let mut rel = PubAck::new(ack.packet_id);
                    if self.protocol.is_v5() {
                        rel.reason = ReasonCode::PACKET_IDENTIFIER_NOT_FOUND;
                    }
                    self.outbox.push_back(Packet::PubRel(rel));
                }
            },
            Packet::PubRel(rel) => {
                let mut comp = PubAck::new(rel.packet_id);
                match self.incoming_qos2.remove(&rel.packet_id) {
                    Some(Some(message)) => {
                        self.outbox.push_back(Packet::PubComp(comp));
                        self.events.push_back(Event::Message(message));
                        return Ok(());
                    }
                    Some(None) => {}
                    None if self.protocol.is_v5() => {
                        comp.reason = ReasonCode::PACKET_IDENTIFIER_NOT_FOUND;
                    }
                    None => {}
                }
                self.outbox.push_back(Packet::PubComp(comp));
            }
            Packet::PubComp(ack) => {
                if let Some(Outgoing::PubRel { .. }) = self.outgoing.get(&ack.packet_id) {
                    self.outgoing.remove(&ack.packet_id);
                    self.events.push_back(Event::Published {
                        packet_id: ack.packet_id,
                        qos: QoS::ExactlyOnce,
                        reason: ack.reason,
                    });
                    self.drain_pending()?;
                }
            }
            Packet::SubAck(ack) => {
                self.requests.remove(&ack.packet_id);
                self.events.push_back(Event::SubAck(ack));
            }
            Packet::UnsubAck(ack) => {
                self.requests.remove(&ack.packet_id);
                self.events.push_back(Event::UnsubAck(ack));
            }
            Packet::PingResp => {
                self.ping_outstanding = false;
            }
            Packet::Disconnect(d) => {
                self.events.push_back(Event::Disconnected(d));
            }
            Packet::Auth(a) => {
                self.events.push_back(Event::Auth(a));
            }
            Packet::ConnAck(_) => return Err(StateError::DuplicateConnAck),
            other => return Err(StateError::UnexpectedPacket(other.packet_type().name())),
        }
        Ok(())
    }

    fn handle_publish(&mut self, p: Publish) -> Result<(), StateError> {
        match p.qos {
            QoS::AtMostOnce => self.events.push_back(Event::Message(p)),
            QoS::AtLeastOnce => {
                if !self.manual_acks {
                    self.outbox
                        .push_back(Packet::PubAck(PubAck::new(p.packet_id)));
                }
                self.events.push_back(Event::Message(p));
            }
            QoS::ExactlyOnce => {
                let pid = p.packet_id;
                if !self.incoming_qos2.contains_key(&pid) {
                    if self.protocol.is_v5()
                        && self.incoming_qos2.len() >= usize::from(self.receive_maximum)
                    {
                        return Err(StateError::ReceiveMaximumExceeded);
                    }
                    if self.deliver_qos2_on_pubrel {
                        self.incoming_qos2.insert(pid, Some(p));
                    } else {
                        self.incoming_qos2.insert(pid, None);
                        self.events.push_back(Event::Message(p));
                        if self.manual_acks {
                            // PUBREC when the application acknowledges
                            self.awaiting_ack.insert(pid);
                            return Ok(());
                        }
                    }
                }
                if !self.awaiting_ack.contains(&pid) {
                    self.outbox.push_back(Packet::PubRec(PubAck::new(pid)));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use midge_codec::{ConnAckPropertyValues, TopicFilter, TopicName};

    fn connack(session_present: bool, receive_max: Option<u16>) -> ConnAck {
        let properties = ConnAckPropertyValues {
            receive_maximum: receive_max,
            ..Default::default()
        }
        .into();
        ConnAck {
            session_present,
            reason: ReasonCode::SUCCESS,
            properties,
        }
    }

    fn publish(qos: QoS, payload: &'static str) -> Publish {
        let mut p = Publish::new(TopicName::new("t").unwrap(), payload);
        p.qos = qos;
        p
    }

    fn connected(protocol: Protocol, receive_max: Option<u16>) -> MqttState {
        let mut s = MqttState::new(protocol);
        s.handle_connack(&connack(false, receive_max)).unwrap();
        assert!(matches!(s.pop_event(), Some(Event::Connected(_))));
        s
    }

    fn drain(s: &mut MqttState) -> Vec<Packet> {
        s.outbox().drain(..).collect()
    }

    #[test]
    fn qos0_publish_goes_straight_out_without_packet_id() {
        let mut s = connected(Protocol::V311, None);
        assert_eq!(s.publish(publish(QoS::AtMostOnce, "a")).unwrap(), None);
        let out = drain(&mut s);
        assert!(matches!(&out[..], [Packet::Publish(p)] if p.packet_id == 0));
        assert_eq!(s.inflight(), 0);
    }

    #[test]
    fn qos1_flow_completes_on_puback() {
        let mut s = connected(Protocol::V311, None);
        let pid = s.publish(publish(QoS::AtLeastOnce, "a")).unwrap().unwrap();
        assert_eq!(pid, 1);
        assert_eq!(s.inflight(), 1);
        s.handle_packet(Packet::PubAck(PubAck::new(pid))).unwrap();
        assert_eq!(s.inflight(), 0);
        assert!(matches!(
            s.pop_event(),
            Some(Event::Published {
                packet_id: 1,
                qos: QoS::AtLeastOnce,
                ..
            })
        ));
    }

    #[test]
    fn qos2_flow_sends_pubrel_then_completes_on_pubcomp() {
        let mut s = connected(Protocol::V5, None);
        let pid = s.publish(publish(QoS::ExactlyOnce, "a")).unwrap().unwrap();
        drain(&mut s);
        s.handle_packet(Packet::PubRec(PubAck::new(pid))).unwrap();
        assert!(matches!(&drain(&mut s)[..], [Packet::PubRel(r)] if r.packet_id == pid));
        assert!(s.pop_event().is_none());
        s.handle_packet(Packet::PubComp(PubAck::new(pid))).unwrap();
        assert!(matches!(
            s.pop_event(),
            Some(Event::Published {
                qos: QoS::ExactlyOnce,
                ..
            })
        ));
        assert_eq!(s.inflight(), 0);
    }

    #[test]
    fn qos2_pubrec_with_error_reason_ends_the_flow() {
        let mut s = connected(Protocol::V5, None);
        let pid = s.publish(publish(QoS::ExactlyOnce, "a")).unwrap().unwrap();
        drain(&mut s);
        let mut rec = PubAck::new(pid);
        rec.reason = ReasonCode::NOT_AUTHORIZED;
        s.handle_packet(Packet::PubRec(rec)).unwrap();
        assert!(drain(&mut s).is_empty());
        assert!(matches!(
            s.pop_event(),
            Some(Event::Published {
                reason: ReasonCode::NOT_AUTHORIZED,
                ..
            })
        ));
    }

    #[test]
    fn packet_ids_skip_those_in_flight_and_wrap() {
        let mut s = connected(Protocol::V311, None);
        s.next_pid = u16::MAX;
        let a = s.publish(publish(QoS::AtLeastOnce, "a")).unwrap().unwrap();
        let b = s.publish(publish(QoS::AtLeastOnce, "b")).unwrap().unwrap();
        assert_eq!((a, b), (u16::MAX, 1));
        s.next_pid = u16::MAX;
        let c = s.publish(publish(QoS::AtLeastOnce, "c")).unwrap().unwrap();
        assert_eq!(c, 2, "65535 and 1 are still in flight");
    }

    #[test]
    fn receive_maximum_holds_back_publishes_until_acked() {
        let mut s = connected(Protocol::V5, Some(2));
        for _ in 0..5 {
            s.publish(publish(QoS::AtLeastOnce, "x")).unwrap();
        }
        assert_eq!(s.inflight(), 2);
        assert_eq!(s.pending(), 3);
        assert_eq!(drain(&mut s).len(), 2);
        s.handle_packet(Packet::PubAck(PubAck::new(1))).unwrap();
        assert_eq!(s.inflight(), 2);
        assert_eq!(s.pending(), 2);
        let out = drain(&mut s);
        assert!(matches!(&out[..], [Packet::Publish(p)] if p.packet_id == 3));
    }

    #[test]
    fn own_max_inflight_caps_v311_too() {
        let mut s = MqttState::new(Protocol::V311);
        s.set_max_inflight(1);
        s.handle_connack(&connack(false, None)).unwrap();
        for _ in 0..3 {
            s.publish(publish(QoS::ExactlyOnce, "x")).unwrap();
        }
        assert_eq!((s.inflight(), s.pending()), (1, 2));
        s.handle_packet(Packet::PubRec(PubAck::new(1))).unwrap();
        assert_eq!(s.inflight(), 1, "PUBREL still counts");
        s.handle_packet(Packet::PubComp(PubAck::new(1))).unwrap();
        assert_eq!((s.inflight(), s.pending()), (1, 1));
    }

    #[test]
    fn receive_maximum_is_ignored_in_v311() {
        let mut s = connected(Protocol::V311, Some(1));
        for _ in 0..3 {
            s.publish(publish(QoS::AtLeastOnce, "x")).unwrap();
        }
        assert_eq!(s.inflight(), 3);
    }

    #[test]
    fn reconnect_redelivers_in_flight_with_dup_in_original_order() {
        let mut s = connected(Protocol::V311, None);
        s.next_pid = 10;
        s.publish(publish(QoS::ExactlyOnce, "first")).unwrap();
        s.next_pid = 5;
        s.publish(publish(QoS::AtLeastOnce, "second")).unwrap();
        s.publish(publish(QoS::ExactlyOnce, "third")).unwrap();
        drain(&mut s);
        // the third one got its PUBREC: it must come back as a PUBREL
        s.handle_packet(Packet::PubRec(PubAck::new(6))).unwrap();
        drain(&mut s);
        s.connection_lost();
        s.handle_connack(&connack(true, None)).unwrap();
        let out = drain(&mut s);
        assert_eq!(out.len(), 3);
        assert!(matches!(&out[0], Packet::Publish(p) if p.dup && p.packet_id == 10));
        assert!(matches!(&out[1], Packet::Publish(p) if p.dup && p.packet_id == 5));
        assert!(matches!(&out[2], Packet::PubRel(r) if r.packet_id == 6));
    }

    #[test]
    fn publishes_queued_while_disconnected_are_sent_on_connect_without_dup() {
        let mut s = MqttState::new(Protocol::V311);
        s.publish(publish(QoS::AtLeastOnce, "a")).unwrap();
        s.publish(publish(QoS::AtMostOnce, "dropped")).unwrap();
        assert!(drain(&mut s).is_empty());
        s.handle_connack(&connack(false, None)).unwrap();
        let out = drain(&mut s);
        assert!(matches!(&out[..], [Packet::Publish(p)] if !p.dup && p.packet_id == 1));
    }

    #[test]
    fn incoming_qos1_is_acked_and_delivered() {
        let mut s = connected(Protocol::V311, None);
        let mut p = publish(QoS::AtLeastOnce, "in");
        p.packet_id = 7;
        s.handle_packet(Packet::Publish(p)).unwrap();
        assert!(matches!(&drain(&mut s)[..], [Packet::PubAck(a)] if a.packet_id == 7));
        assert!(matches!(s.pop_event(), Some(Event::Message(_))));
    }

    #[test]
    fn incoming_qos2_duplicate_is_delivered_once() {
        let mut s = connected(Protocol::V5, None);
        let mut p = publish(QoS::ExactlyOnce, "in");
        p.packet_id = 9;
        s.handle_packet(Packet::Publish(p.clone())).unwrap();
        p.dup = true;
        s.handle_packet(Packet::Publish(p)).unwrap();
        let out = drain(&mut s);
        assert_eq!(out.len(), 2);
        assert!(
            out.iter()
                .all(|o| matches!(o, Packet::PubRec(a) if a.packet_id == 9))
        );
        assert!(matches!(s.pop_event(), Some(Event::Message(_))));
        assert!(s.pop_event().is_none());
        s.handle_packet(Packet::PubRel(PubAck::new(9))).unwrap();
        assert!(
            matches!(&drain(&mut s)[..], [Packet::PubComp(c)] if c.reason == ReasonCode::SUCCESS)
        );
        // a PUBREL for an id we no longer know gets "not found" in v5
        s.handle_packet(Packet::PubRel(PubAck::new(9))).unwrap();
        assert!(matches!(&drain(&mut s)[..],
            [Packet::PubComp(c)] if c.reason == ReasonCode::PACKET_IDENTIFIER_NOT_FOUND));
    }

    #[test]
    fn manual_acks_wait_for_the_application() {
        let mut s = connected(Protocol::V5, None);
        s.set_manual_acks(true);
        let mut p1 = publish(QoS::AtLeastOnce, "one");
        p1.packet_id = 3;
        let mut p2 = publish(QoS::ExactlyOnce, "two");
        p2.packet_id = 4;
        s.handle_packet(Packet::Publish(p1)).unwrap();
        s.handle_packet(Packet::Publish(p2.clone())).unwrap();
        assert!(
            drain(&mut s).is_empty(),
            "nothing acknowledged before the application"
        );
        assert!(matches!(s.pop_event(), Some(Event::Message(m)) if m.packet_id == 3));
        assert!(matches!(s.pop_event(), Some(Event::Message(m)) if m.packet_id == 4));
        // a redelivered duplicate before the ack is neither delivered nor acknowledged
        p2.dup = true;
        s.handle_packet(Packet::Publish(p2)).unwrap();
        assert!(drain(&mut s).is_empty());
        assert!(s.pop_event().is_none());
        s.ack(QoS::ExactlyOnce, 4);
        s.ack(QoS::AtLeastOnce, 3);
        s.ack(QoS::ExactlyOnce, 4); // twice: one PUBREC
        assert!(matches!(
            &drain(&mut s)[..],
            [Packet::PubRec(a), Packet::PubAck(b)] if a.packet_id == 4 && b.packet_id == 3
        ));
    }

    #[test]
    fn incoming_qos2_can_be_delivered_on_pubrel() {
        let mut s = connected(Protocol::V311, None);
        s.set_deliver_qos2_on_pubrel(true);
        let mut p = publish(QoS::ExactlyOnce, "in");
        p.packet_id = 4;
        s.handle_packet(Packet::Publish(p.clone())).unwrap();
        s.handle_packet(Packet::Publish(p)).unwrap();
        assert!(s.pop_event().is_none(), "not before PUBREL");
        s.handle_packet(Packet::PubRel(PubAck::new(4))).unwrap();
        assert!(matches!(s.pop_event(), Some(Event::Message(m)) if m.packet_id == 4));
        assert!(s.pop_event().is_none());
        let out = drain(&mut s);
        assert!(matches!(
            &out[..],
            [Packet::PubRec(_), Packet::PubRec(_), Packet::PubComp(_)]
        ));
    }

    #[test]
    fn refused_connack_is_an_error() {
        let mut s = MqttState::new(Protocol::V311);
        let mut c = connack(false, None);
        c.reason = ReasonCode::NOT_AUTHORIZED;
        assert_eq!(
            s.handle_connack(&c),
            Err(StateError::Refused(ReasonCode::NOT_AUTHORIZED))
        );
        assert!(!s.is_connected());
    }

    #[test]
    fn subscribe_gets_an_id_and_suback_is_reported() {
        let mut s = connected(Protocol::V311, None);
        let sub = Subscribe {
            packet_id: 0,
            properties: Default::default(),
            filters: vec![(TopicFilter::new("a/#").unwrap(), Default::default())],
        };
        let pid = s.subscribe(sub).unwrap();
        assert!(matches!(&drain(&mut s)[..], [Packet::Subscribe(x)] if x.packet_id == pid));
        s.handle_packet(Packet::SubAck(midge_codec::SubAck {
            packet_id: pid,
            properties: Default::default(),
            reasons: vec![ReasonCode::GRANTED_QOS_0],
        }))
        .unwrap();
        assert!(matches!(s.pop_event(), Some(Event::SubAck(_))));
    }

    #[test]
    fn server_sending_subscribe_is_a_protocol_error() {
        let mut s = connected(Protocol::V311, None);
        let err = s
            .handle_packet(Packet::Unsubscribe(Unsubscribe {
                packet_id: 1,
                properties: Default::default(),
                filters: vec![],
            }))
            .unwrap_err();
        assert_eq!(err, StateError::UnexpectedPacket("UNSUBSCRIBE"));
    }

    #[test]
    fn pingresp_clears_outstanding_ping() {
        let mut s = connected(Protocol::V311, None);
        s.ping();
        assert!(s.ping_outstanding());
        s.handle_packet(Packet::PingResp).unwrap();
        assert!(!s.ping_outstanding());
    }
}
