//! SUBSCRIBE / SUBACK and UNSUBSCRIBE / UNSUBACK (MQTT 5 §3.8-§3.11), with retained message
//! delivery on subscribe.

use std::sync::Arc;
use std::time::Instant;

use midge_codec::{
    Packet, Protocol, ReasonCode, RetainHandling, SubAck, Subscribe, UnsubAck, Unsubscribe,
};

use crate::session::{Delivery, SubRecord};
use crate::trie::Subscriber;
use crate::{Action, Broker, ClientInfo, ConnId};

impl Broker {
    pub(crate) fn handle_subscribe(
        &mut self,
        now: Instant,
        conn: ConnId,
        sub: Subscribe,
        out: &mut Vec<Action>,
    ) {
        let Some(sid) = self.conns.get(&conn).and_then(|c| c.session) else {
            return;
        };
        let Some(s) = self.session(sid) else { return };
        let protocol = s.protocol;
        // a mosquitto bridge (CONNECT level | 0x80) speaking 3.x cannot ask for No Local or
        // Retain As Published, so it gets both, as from mosquitto: its own messages are not
        // sent back to it and retain flags pass through unchanged
        let bridge_3x = !protocol.is_v5() && self.conns.get(&conn).is_some_and(|c| c.bridge);
        let identifier = sub.properties.subscription_identifier;
        if identifier.is_some() && !self.config.subscription_identifiers {
            return self.fail(
                now,
                conn,
                ReasonCode::SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED,
                out,
            );
        }
        let mut reasons = Vec::with_capacity(sub.filters.len());
        let mut retained_for = Vec::new();
        for (filter, options) in &sub.filters {
            let Some(s) = self.session(sid) else { return };
            let info = ClientInfo {
                client_id: &s.client_id,
                username: s.username.as_deref(),
                listener: s.listener,
            };
            let levels = filter.levels().count();
            let reason = if filter.is_shared() && !self.config.shared_subscriptions {
                ReasonCode::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED
            } else if filter.has_wildcards() && !self.config.wildcard_subscriptions {
                ReasonCode::WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED
            } else if self.config.max_topic_levels != 0 && levels > self.config.max_topic_levels {
                ReasonCode::TOPIC_FILTER_INVALID
            } else if !self.auth.can_subscribe(&info, filter) {
                ReasonCode::NOT_AUTHORIZED
            } else if self.config.max_subscriptions_per_client != 0
                && s.subscriptions.get().is_some_and(|m| {
                    m.len() >= self.config.max_subscriptions_per_client
                        && !m.contains_key(filter.as_byte_string())
                })
            {
                ReasonCode::QUOTA_EXCEEDED
            } else {
                let mut options = *options;
                options.qos = options.qos.min(self.config.max_qos);
                if bridge_3x {
                    // No Local is not allowed on a shared subscription [MQTT-3.8.3-4]
                    options.no_local = !filter.is_shared();
                    options.retain_as_published = true;
                }
                let record = SubRecord {
                    options,
                    identifier,
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
                    s.subscriptions
                        .make_mut()
                        .insert(filter.as_byte_string().clone(), record);
                }
                if is_new {
                    self.interest_added(sid, filter.as_byte_string());
                }
                self.persist_subscribe(sid, filter.as_byte_string(), record);
                // retained messages are not sent for shared subscriptions
                let send_retained = !filter.is_shared()
                    && match options.retain_handling {
                        RetainHandling::SendAtSubscribe => true,
                        RetainHandling::SendIfNew => is_new,
                        RetainHandling::DoNotSend => false,
                    };
                if send_retained {
                    retained_for.push((filter.clone(), options, identifier));
                }
                ReasonCode(options.qos.as_u8())
            };
            reasons.push(if protocol == Protocol::V5 || !reason.is_error() {
                reason
            } else {
                ReasonCode::UNSPECIFIED_ERROR
            });
        }
        out.push(Action::Send(
            conn,
            Packet::SubAck(SubAck {
                packet_id: sub.packet_id,
                properties: Default::default(),
                reasons,
            }),
        ));
        // retained messages follow the SUBACK, with RETAIN set [MQTT-3.3.1-8]
        for (filter, options, identifier) in retained_for {
            let msgs = self.retained.matching(&filter, now);
            for msg in msgs {
                if let Some(s) = self.session(sid) {
                    if self.auth.checks_delivery() {
                        let info = ClientInfo {
                            client_id: &s.client_id,
                            username: s.username.as_deref(),
                            listener: s.listener,
                        };
                        if !self.auth.can_receive(&info, msg.topic.as_str()) {
                            continue;
                        }
                    }
                }
                let d = Delivery {
                    qos: msg.qos.min(options.qos),
                    msg: Arc::clone(&msg),
                    retain: true,
                    sub_ids: identifier.into_iter().collect(),
                    share: None,
                    seq: 0,
                    msg_id: 0,
                };
                self.deliver(now, sid, d, out);
            }
        }
    }

    pub(crate) fn handle_unsubscribe(
        &mut self,
        _now: Instant,
        conn: ConnId,
        u: Unsubscribe,
        out: &mut Vec<Action>,
    ) {
        let Some(sid) = self.conns.get(&conn).and_then(|c| c.session) else {
            return;
        };
        let mut reasons = Vec::with_capacity(u.filters.len());
        for filter in &u.filters {
            let existed = self
                .session_mut(sid)
                .and_then(|s| s.subscriptions.get_mut())
                .is_some_and(|m| m.remove(filter.as_byte_string()).is_some());
            if existed {
                if self.tree.remove(filter.filter(), filter.share_group(), sid) {
                    self.interest_removed(sid, filter.as_byte_string());
                }
                self.persist_unsubscribe(sid, filter.as_byte_string());
            }
            reasons.push(if existed {
                ReasonCode::SUCCESS
            } else {
                ReasonCode::NO_SUBSCRIPTION_EXISTED
            });
        }
        let v5 = self.session(sid).is_some_and(|s| s.protocol.is_v5());
        out.push(Action::Send(
            conn,
            Packet::UnsubAck(UnsubAck {
                packet_id: u.packet_id,
                properties: Default::default(),
                reasons: if v5 { reasons } else { Vec::new() },
            }),
        ));
    }
}
