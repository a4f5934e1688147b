//! DISCONNECT from the client (MQTT 5 §3.14).

use std::time::Instant;

use midge_codec::{Disconnect, ReasonCode};

use crate::{Action, Broker, ConnId};

impl Broker {
    pub(crate) fn handle_disconnect(
        &mut self,
        now: Instant,
        conn: ConnId,
        d: Disconnect,
        out: &mut Vec<Action>,
    ) {
        let Some(sid) = self.conns.get(&conn).and_then(|c| c.session) else {
            return;
        };
        if let Some(new_expiry) = d.properties.session_expiry_interval {
            let max = self.config.max_session_expiry;
            let Some(s) = self.session_mut(sid) else {
                return;
            };
            if s.expiry_interval == 0 && new_expiry != 0 {
                // [MQTT-3.14.2-2]
                return self.fail(now, conn, ReasonCode::PROTOCOL_ERROR, out);
            }
            s.expiry_interval = new_expiry.min(max);
        }
        // 0x04 Disconnect with Will Message keeps the will; any other reason discards it
        // [MQTT-3.14.4-3]
        let with_will = d.reason == ReasonCode::DISCONNECT_WITH_WILL;
        self.conns.remove(&conn);
        out.push(Action::Close(conn));
        self.detach(now, sid, conn, with_will, out);
    }
}
