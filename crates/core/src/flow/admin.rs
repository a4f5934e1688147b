//! What an operator does to live clients (the server's device registry and HTTP API): cut
//! connections (MQTT 5: DISCONNECT 0x98 Administrative action), drop subscriptions the
//! authorizer no longer allows, and list the clients.

use std::time::Instant;

use bytestring::ByteString;
use midge_codec::{Disconnect, Packet, Protocol, ReasonCode, TopicFilter};

use crate::{Action, Broker, ClientInfo, CloseCause, Message, SessionId};

/// One session as the operations console shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSummary {
    /// Its connection, when connected.
    pub conn: Option<crate::ConnId>,
    /// Client identifier.
    pub client_id: ByteString,
    /// User name it logged in with.
    pub username: Option<ByteString>,
    /// Whether a connection is attached (false: an offline persistent session).
    pub connected: bool,
    /// Listener of its latest connection.
    pub listener: u16,
    /// Protocol of its latest connection.
    pub protocol: Protocol,
    /// Session expiry interval in seconds (`u32::MAX` = never).
    pub expiry_interval: u32,
    /// Messages queued for it (not yet sent).
    pub queued: usize,
    /// QoS 1/2 messages sent and not yet acknowledged.
    pub inflight: usize,
    /// Its subscriptions: raw filter (with any `$share/g/` prefix) and maximum QoS.
    pub subscriptions: Vec<(ByteString, u8)>,
    /// One of the server's own in-process clients (`$midge/...`).
    pub internal: bool,
}

impl Broker {
    /// Cut every connected client for which `select(client_id, username)` holds: MQTT 5
    /// clients get DISCONNECT with `reason` first (0x98 Administrative action for an
    /// operator's decision); the will is published as for any connection the server ends.
    /// Returns how many were cut.
    pub fn disconnect_clients(
        &mut self,
        now: Instant,
        select: impl Fn(&str, Option<&str>) -> bool,
        reason: ReasonCode,
        out: &mut Vec<Action>,
    ) -> usize {
        let conns: Vec<_> = self
            .sessions
            .iter()
            .flatten()
            .filter(|s| select(&s.client_id, s.username.as_deref()))
            .filter_map(|s| s.conn)
            .collect();
        for &conn in &conns {
            if self.conns.get(&conn).is_some_and(|c| c.protocol.is_v5()) {
                out.push(Action::Send(
                    conn,
                    Packet::Disconnect(Disconnect::new(reason)),
                ));
            }
            out.push(Action::Close(conn));
            self.closed(now, conn, CloseCause::Administrative, out);
        }
        conns.len()
    }

    /// Check again every subscription of the sessions (connected or not) for which
    /// `select(client_id, username)` holds, and remove those the authorizer no longer
    /// allows (a narrowed policy). Returns how many were removed.
    pub fn recheck_subscriptions(&mut self, select: impl Fn(&str, Option<&str>) -> bool) -> usize {
        let mut denied: Vec<(SessionId, ByteString)> = Vec::new();
        for (i, s) in self.sessions.iter().enumerate() {
            let Some(s) = s else { continue };
            if s.client_id.starts_with(crate::cluster::REMOTE_PREFIX)
                || !select(&s.client_id, s.username.as_deref())
            {
                continue;
            }
            let Some(subs) = s.subscriptions.get() else {
                continue;
            };
            let info = ClientInfo {
                client_id: &s.client_id,
                username: s.username.as_deref(),
                listener: s.listener,
            };
            for raw in subs.keys() {
                let allowed =
                    TopicFilter::new(raw.clone()).is_ok_and(|f| self.auth.can_subscribe(&info, &f));
                if !allowed {
                    denied.push((SessionId(i as u32), raw.clone()));
                }
            }
        }
        for (sid, raw) in &denied {
            if let Some(m) = self
                .session_mut(*sid)
                .and_then(|s| s.subscriptions.get_mut())
            {
                m.remove(raw);
            }
            if let Ok(f) = TopicFilter::new(raw.clone()) {
                if self.tree.remove(f.filter(), f.share_group(), *sid) {
                    self.interest_removed(*sid, raw);
                }
            }
            self.persist_unsubscribe(*sid, raw);
        }
        denied.len()
    }

    /// The retained messages matching `filter` (expired ones left out), at most `limit`.
    pub fn retained_matching(
        &self,
        filter: &TopicFilter,
        now: Instant,
        limit: usize,
    ) -> Vec<std::sync::Arc<Message>> {
        let mut all = self.retained.matching(filter, now);
        all.sort_by(|a, b| a.topic.as_str().cmp(b.topic.as_str()));
        all.truncate(limit);
        all
    }

    /// The last message of each topic matching `filter` (never `$` topics: they are not
    /// kept), updated at `since` (ms since the Unix epoch) or later when given, in topic
    /// order, at most `limit`; and how many matched in all.
    pub fn last_values(
        &self,
        filter: &TopicFilter,
        since: Option<i64>,
        limit: usize,
    ) -> (Vec<crate::LastValue>, usize) {
        self.last.matching(filter, since, limit)
    }

    /// Delete the retained messages matching `filter` (one topic, or a subtree with `#`),
    /// as an empty retained PUBLISH would (stored durably). Returns how many.
    pub fn clear_retained(&mut self, filter: &TopicFilter, now: Instant) -> usize {
        let topics: Vec<_> = self
            .retained
            .matching(filter, now)
            .iter()
            .map(|m| m.topic.clone())
            .collect();
        for t in &topics {
            self.retain(Message::new(
                t.clone(),
                bytes::Bytes::new(),
                midge_codec::QoS::AtMostOnce,
                true,
            ));
        }
        topics.len()
    }

    /// Discard the session of `client_id`: a connected client is cut first (MQTT 5:
    /// DISCONNECT 0x98), then the session ends with its subscriptions and queued messages
    /// (its will is published). Returns whether there was one.
    pub fn discard_session(
        &mut self,
        now: Instant,
        client_id: &str,
        out: &mut Vec<Action>,
    ) -> bool {
        self.disconnect_clients(
            now,
            |c, _| c == client_id,
            ReasonCode::ADMINISTRATIVE_ACTION,
            out,
        );
        match self.by_client_id.get(client_id).copied() {
            Some(sid) => {
                self.end_session(now, sid, out);
                true
            }
            None => false,
        }
    }

    /// Every session, connected or not, for the operations console.
    pub fn clients(&self) -> Vec<ClientSummary> {
        self.sessions
            .iter()
            .flatten()
            // other nodes of a cluster are not clients of this one
            .filter(|s| !s.client_id.starts_with(crate::cluster::REMOTE_PREFIX))
            .map(|s| {
                let protocol = s
                    .conn
                    .and_then(|c| self.conns.get(&c))
                    .map_or(s.protocol, |c| c.protocol);
                ClientSummary {
                    conn: s.conn,
                    client_id: s.client_id.clone(),
                    username: s.username.clone(),
                    connected: s.conn.is_some(),
                    listener: s.listener,
                    protocol,
                    expiry_interval: s.expiry_interval,
                    queued: s.flow().queue.len(),
                    inflight: s.flow().inflight.len(),
                    subscriptions: s
                        .subscriptions
                        .get()
                        .map(|m| {
                            // by filter, not in the hash map's order
                            let mut v: Vec<_> = m
                                .iter()
                                .map(|(k, r)| (k.clone(), r.options.qos.as_u8()))
                                .collect();
                            v.sort_unstable();
                            v
                        })
                        .unwrap_or_default(),
                    internal: s.is_internal(),
                }
            })
            .collect()
    }
}
