//! CONNECT / CONNACK (MQTT 5 §3.1, §3.2): client identifiers, session present, takeover,
//! clean start, session expiry, will, negotiated limits.

use std::time::Instant;

use midge_codec::{
    ConnAck, ConnAckProperties, Connect, Disconnect, Packet, Protocol, QoS, ReasonCode,
};

use crate::session::Session;
use crate::{Action, Broker, ClientInfo, ConnId};

impl Broker {
    pub(crate) fn handle_connect(
        &mut self,
        now: Instant,
        conn: ConnId,
        c: Connect,
        out: &mut Vec<Action>,
    ) {
        let v5 = c.protocol.is_v5();
        let mut listener = 0;
        if let Some(state) = self.conns.get_mut(&conn) {
            state.protocol = c.protocol;
            state.bridge = c.bridge;
            listener = state.listener;
        }
        let refuse = |out: &mut Vec<Action>, reason: ReasonCode| {
            out.push(Action::Send(
                conn,
                Packet::ConnAck(ConnAck {
                    session_present: false,
                    reason,
                    properties: Default::default(),
                }),
            ));
            out.push(Action::Close(conn));
        };

        // no enhanced authentication method is offered: a client asking for one is told so
        // and the connection closed [MQTT-4.12.0-1] (accepting it would leave the client
        // waiting for an AUTH exchange, or trusting an authentication that never happened)
        if v5 && c.properties.authentication_method.is_some() {
            self.conns.remove(&conn);
            return refuse(out, ReasonCode::BAD_AUTHENTICATION_METHOD);
        }

        // client identifier rules [MQTT-3.1.3-6] [MQTT-3.1.3-8]
        let mut assigned = false;
        let client_id = if c.client_id.is_empty() {
            let allowed = match c.protocol {
                Protocol::V5 => true,
                Protocol::V311 => c.clean_start,
                Protocol::V31 => false,
            };
            if !allowed {
                self.conns.remove(&conn);
                return refuse(out, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
            }
            assigned = true;
            self.assign_client_id()
        } else {
            // decoded strings are slices of the connection's read buffer; a session lives
            // long, so it gets its own copy instead of pinning that whole buffer
            detach_str(&c.client_id)
        };
        let internal = self.conns.get(&conn).is_some_and(|c| c.internal);
        if !internal && client_id.starts_with(crate::INTERNAL_CLIENT_ID_PREFIX) {
            // reserved for the server's own clients [MQTT-3.1.3-5 allows refusing ids]
            self.conns.remove(&conn);
            return refuse(out, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
        }

        let info = ClientInfo {
            client_id: &client_id,
            username: c.username.as_deref(),
            listener,
        };
        if let Err(reason) = self.auth.connect(&info) {
            self.conns.remove(&conn);
            return refuse(out, reason);
        }
        if let Some(will) = &c.will {
            if will.qos > self.config.max_qos {
                self.conns.remove(&conn);
                return refuse(out, ReasonCode::QOS_NOT_SUPPORTED);
            }
            if will.retain && !self.config.retain_available {
                self.conns.remove(&conn);
                return refuse(out, ReasonCode::RETAIN_NOT_SUPPORTED);
            }
        }

        // session takeover [MQTT-3.1.4-3]: the old connection is told (MQTT 5) and closed; it
        // ended abnormally, so its will follows the usual rules
        let existing = self.by_client_id.get(&client_id).copied();
        if let Some(sid) = existing {
            if let Some(old) = self.session(sid).and_then(|s| s.conn) {
                if self.conns.get(&old).is_some_and(|o| o.protocol.is_v5()) {
                    out.push(Action::Send(
                        old,
                        Packet::Disconnect(Disconnect::new(ReasonCode::SESSION_TAKEN_OVER)),
                    ));
                }
                out.push(Action::Close(old));
                self.conns.remove(&old);
                self.detach(now, sid, old, true, out);
            }
        }
        // the session may have ended in detach (expiry 0)
        let existing = self.by_client_id.get(&client_id).copied();

        let expiry = if v5 {
            c.properties
                .session_expiry_interval
                .unwrap_or(0)
                .min(self.config.max_session_expiry)
        } else if c.clean_start {
            0
        } else {
            self.config.max_session_expiry
        };

        let (sid, session_present) = match existing {
            Some(sid) if !c.clean_start => (sid, true),
            Some(sid) => {
                // a new network connection before the will delay passed: no will
                // [MQTT-3.1.3-9], also when it starts clean and so ends the old session
                if let Some(s) = self.session_mut(sid) {
                    s.will = None;
                }
                self.end_session(now, sid, out);
                (
                    self.insert_session(Session::new(client_id.clone(), c.protocol)),
                    false,
                )
            }
            None => (
                self.insert_session(Session::new(client_id.clone(), c.protocol)),
                false,
            ),
        };

        let keep_alive = if self.config.max_keepalive != 0
            && v5
            && (c.keep_alive == 0 || c.keep_alive > self.config.max_keepalive)
        {
            self.config.max_keepalive
        } else {
            c.keep_alive
        };

        let Some(s) = self.session_mut(sid) else {
            return;
        };
        let newly_connected = s.conn.replace(conn).is_none();
        s.protocol = c.protocol;
        s.username = c.username.as_ref().map(detach_str);
        s.listener = listener;
        s.expiry_interval = expiry;
        s.disconnected_at = None;
        // a new connection before the will delay passed cancels the pending will
        // [MQTT-3.1.3-9]; the new CONNECT's will replaces it
        s.will = c.will.as_ref().map(|w| {
            let mut w = w.clone();
            w.payload = bytes::Bytes::copy_from_slice(&w.payload);
            w.topic = w.topic.detached();
            Box::new(crate::session::Will { will: w, at: None })
        });
        s.client_receive_maximum = c.properties.receive_maximum.unwrap_or(u16::MAX);
        s.client_max_packet = c.properties.maximum_packet_size.unwrap_or(u32::MAX);
        if newly_connected {
            self.connected += 1;
            self.stats.clients_maximum = self.stats.clients_maximum.max(self.connected);
        }

        self.persist_connected(sid);

        if let Some(state) = self.conns.get_mut(&conn) {
            state.session = Some(sid);
            state.topic_alias_max_out = c.properties.topic_alias_maximum.unwrap_or(0);
            state.request_problem_info = c.properties.request_problem_information != Some(0);
        }

        let mut props = ConnAckProperties::default();
        if v5 {
            if assigned {
                props.assigned_client_identifier = Some(client_id.clone());
            }
            if c.properties.session_expiry_interval.unwrap_or(0) != expiry {
                props.session_expiry_interval = Some(expiry);
            }
            if self.config.receive_maximum != u16::MAX {
                props.receive_maximum = Some(self.config.receive_maximum);
            }
            if self.config.max_qos < QoS::ExactlyOnce {
                props.maximum_qos = Some(self.config.max_qos.as_u8());
            }
            if !self.config.retain_available {
                props.retain_available = Some(0);
            }
            props.maximum_packet_size = Some(self.config.max_packet_size);
            if self.config.topic_alias_maximum > 0 {
                props.topic_alias_maximum = Some(self.config.topic_alias_maximum);
            }
            if !self.config.wildcard_subscriptions {
                props.wildcard_subscription_available = Some(0);
            }
            if !self.config.subscription_identifiers {
                props.subscription_identifiers_available = Some(0);
            }
            if !self.config.shared_subscriptions {
                props.shared_subscription_available = Some(0);
            }
            if keep_alive != c.keep_alive {
                props.server_keep_alive = Some(keep_alive);
            }
        }
        out.push(Action::Connected {
            conn,
            client_id: client_id.clone(),
            protocol: c.protocol,
            keep_alive,
        });
        self.arm_keep_alive(now, conn, keep_alive);
        out.push(Action::Send(
            conn,
            Packet::ConnAck(ConnAck {
                session_present,
                reason: ReasonCode::SUCCESS,
                properties: props,
            }),
        ));
        if session_present {
            self.resend_inflight(sid);
        }
        self.pump(now, sid, out);
    }
}

/// A copy of a decoded string that does not share the read buffer it came from.
fn detach_str(s: &bytestring::ByteString) -> bytestring::ByteString {
    bytestring::ByteString::from(&**s)
}
