//! PUBLISH and its acknowledgements (MQTT 5 §3.3-§3.7, §4.3): inbound QoS 0/1/2 with exactly
//! once for QoS 2, topic aliases, outbound acknowledgements freeing the in-flight window.

use std::sync::Arc;
use std::time::{Duration, Instant};

use midge_codec::{Packet, PubAck, Publish, QoS, ReasonCode};

use crate::session::OutState;
use crate::{Action, Broker, ClientInfo, ConnId, Message};

impl Broker {
    pub(crate) fn handle_publish(
        &mut self,
        now: Instant,
        conn: ConnId,
        mut p: Publish,
        out: &mut Vec<Action>,
    ) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let Some(sid) = c.session else { return };
        let v5 = c.protocol.is_v5();
        self.stats.messages_received += 1;

        if v5 {
            // topic aliases [MQTT-3.3.2-7..12]
            // (read first: taking it through the properties' DerefMut would allocate a
            // block for a publish that has none)
            if let Some(alias) = p.properties.topic_alias {
                p.properties.topic_alias = None;
                if alias > self.config.topic_alias_maximum {
                    return self.fail(now, conn, ReasonCode::TOPIC_ALIAS_INVALID, out);
                }
                if p.topic.is_empty() {
                    match c.aliases_in.as_ref().and_then(|m| m.get(&alias)) {
                        Some(t) => p.topic = t.clone(),
                        None => return self.fail(now, conn, ReasonCode::PROTOCOL_ERROR, out),
                    }
                } else {
                    // own copy: the alias outlives the read buffer the topic came in
                    c.aliases_in
                        .get_or_insert_with(Default::default)
                        .insert(alias, p.topic.detached());
                }
            }
            // a client must not send subscription identifiers [MQTT-3.3.4-6]
            if !p.properties.subscription_identifiers.is_empty() {
                return self.fail(now, conn, ReasonCode::PROTOCOL_ERROR, out);
            }
        }
        if p.topic.is_empty() {
            // no topic and no alias: a Protocol Error (MQTT 5 §3.3.2.3.4) [MQTT-3.3.2-1]
            return self.fail(now, conn, ReasonCode::PROTOCOL_ERROR, out);
        }
        if p.qos > self.config.max_qos {
            // [MQTT-3.2.2-11]
            return self.fail(now, conn, ReasonCode::QOS_NOT_SUPPORTED, out);
        }
        if p.retain && !self.config.retain_available {
            // [MQTT-3.2.2-14]
            return self.fail(now, conn, ReasonCode::RETAIN_NOT_SUPPORTED, out);
        }
        let Some(s) = self.session(sid) else { return };
        if p.qos == QoS::ExactlyOnce
            && s.inbound_qos2.get().map_or(0, |q| q.len())
                >= usize::from(self.config.receive_maximum)
            && !s
                .inbound_qos2
                .get()
                .is_some_and(|q| q.contains(&p.packet_id))
        {
            // [MQTT-3.3.4-9]
            return self.fail(now, conn, ReasonCode::RECEIVE_MAXIMUM_EXCEEDED, out);
        }

        // levels are the '/' separators plus one (a byte count, which vectorises)
        let too_deep = self.config.max_topic_levels != 0
            && p.topic.as_str().bytes().filter(|&b| b == b'/').count() + 1
                > self.config.max_topic_levels;
        let allowed = {
            let info = ClientInfo {
                client_id: &s.client_id,
                username: s.username.as_deref(),
                listener: s.listener,
            };
            // clients do not publish into the broker's own $SYS tree (but bridges, in-process
            // clients, publish their connection state there, as mosquitto's do)
            let bridge_state = s.client_id.starts_with("$midge/bridge/")
                && p.topic.as_str().starts_with("$SYS/broker/connection/");
            (!p.topic.as_str().starts_with("$SYS") || bridge_state)
                && self.auth.can_publish(&info, p.topic.as_str())
        };

        // QoS 2 exactly once: a PUBLISH whose id is awaiting PUBREL was already delivered
        let duplicate = p.qos == QoS::ExactlyOnce
            && s.inbound_qos2
                .get()
                .is_some_and(|q| q.contains(&p.packet_id));
        let mut reason = ReasonCode::SUCCESS;
        if too_deep {
            reason = ReasonCode::TOPIC_NAME_INVALID;
        } else if !allowed {
            reason = ReasonCode::NOT_AUTHORIZED;
        } else if !duplicate {
            let expires_at = p
                .properties
                .message_expiry_interval
                .map(|secs| now + Duration::from_secs(u64::from(secs)));
            let msg = Message {
                topic: p.topic,
                payload: p.payload,
                qos: p.qos,
                retain: p.retain,
                properties: p.properties,
                expires_at,
                origin: Some(crate::Origin {
                    client_id: s.client_id.clone(),
                    username: s.username.clone(),
                    received_ms: self.wall_ms(now),
                    cluster_id: 0,
                }),
            };
            if msg.retain {
                self.retain(msg.clone());
                self.forward_retained(&msg);
            }
            let n = self.route(now, Arc::new(msg), Some(sid), out);
            if n == 0 {
                reason = ReasonCode::NO_MATCHING_SUBSCRIBERS;
            }
        }
        // MQTT 3.x has no way to refuse a publish: it is acknowledged and dropped
        let reason = if v5 { reason } else { ReasonCode::SUCCESS };
        match p.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                let mut ack = PubAck::new(p.packet_id);
                ack.reason = reason;
                out.push(Action::Send(conn, Packet::PubAck(ack)));
            }
            QoS::ExactlyOnce => {
                if !reason.is_error() {
                    let new = self
                        .session_mut(sid)
                        .is_some_and(|s| s.inbound_qos2.make_mut().insert(p.packet_id));
                    if new {
                        self.persist_inbound_qos2(sid, p.packet_id, true);
                    }
                }
                let mut ack = PubAck::new(p.packet_id);
                ack.reason = reason;
                out.push(Action::Send(conn, Packet::PubRec(ack)));
            }
        }
    }

    pub(crate) fn handle_pubrel(
        &mut self,
        _now: Instant,
        conn: ConnId,
        a: PubAck,
        out: &mut Vec<Action>,
    ) {
        let Some(sid) = self.conns.get(&conn).and_then(|c| c.session) else {
            return;
        };
        let Some(s) = self.session_mut(sid) else {
            return;
        };
        let known = s
            .inbound_qos2
            .get_mut()
            .is_some_and(|q| q.remove(&a.packet_id));
        let mut comp = PubAck::new(a.packet_id);
        if !known && s.protocol.is_v5() {
            comp.reason = ReasonCode::PACKET_IDENTIFIER_NOT_FOUND;
        }
        if known {
            self.persist_inbound_qos2(sid, a.packet_id, false);
        }
        out.push(Action::Send(conn, Packet::PubComp(comp)));
    }

    pub(crate) fn handle_puback(
        &mut self,
        now: Instant,
        conn: ConnId,
        a: PubAck,
        out: &mut Vec<Action>,
    ) {
        self.complete(now, conn, a.packet_id, OutState::AwaitPubAck, out);
    }

    pub(crate) fn handle_pubcomp(
        &mut self,
        now: Instant,
        conn: ConnId,
        a: PubAck,
        out: &mut Vec<Action>,
    ) {
        self.complete(now, conn, a.packet_id, OutState::AwaitPubComp, out);
    }

    pub(crate) fn handle_pubrec(
        &mut self,
        now: Instant,
        conn: ConnId,
        a: PubAck,
        out: &mut Vec<Action>,
    ) {
        let Some(sid) = self.conns.get(&conn).and_then(|c| c.session) else {
            return;
        };
        let Some(s) = self.session_mut(sid) else {
            return;
        };
        let Some(pos) = s.inflight_position(a.packet_id) else {
            // unknown id: answer so the client's flow can finish [MQTT-4.3.3]
            let mut rel = PubAck::new(a.packet_id);
            if s.protocol.is_v5() {
                rel.reason = ReasonCode::PACKET_IDENTIFIER_NOT_FOUND;
            }
            out.push(Action::Send(conn, Packet::PubRel(rel)));
            return;
        };
        if a.reason.is_error() {
            // the receiver refused it: the flow ends here [MQTT-4.3.3-?]
            if let Some(f) = s.flow_mut().remove(pos) {
                self.persist_delivery_gone(sid, f.delivery.seq);
            }
            self.pump(now, sid, out);
            return;
        }
        let mut stored = None;
        // a PUBREC for one not yet re-sent on this connection: the client has it
        s.flow_mut().mark_sent(pos);
        if let Some(f) = s.flow_mut().inflight.get_mut(pos) {
            if f.state != OutState::AwaitPubComp && f.delivery.seq != 0 {
                stored = Some(f.delivery.clone());
            }
            f.state = OutState::AwaitPubComp;
        }
        if let Some(mut d) = stored {
            self.persist_delivery(sid, &mut d, crate::DeliveryState::AwaitPubComp(a.packet_id));
        }
        out.push(Action::Send(conn, Packet::PubRel(PubAck::new(a.packet_id))));
    }

    /// An acknowledgement that ends an outgoing flow frees its slot; acks may come in any order.
    fn complete(
        &mut self,
        now: Instant,
        conn: ConnId,
        packet_id: u16,
        expect: OutState,
        out: &mut Vec<Action>,
    ) {
        let Some(sid) = self.conns.get(&conn).and_then(|c| c.session) else {
            return;
        };
        let Some(s) = self.session_mut(sid) else {
            return;
        };
        let Some(pos) = s.inflight_position(packet_id) else {
            return;
        };
        if s.flow()
            .inflight
            .get(pos)
            .is_some_and(|f| f.state == expect)
        {
            if let Some(f) = s.flow_mut().remove(pos) {
                self.persist_delivery_gone(sid, f.delivery.seq);
            }
            self.pump(now, sid, out);
        }
    }
}
