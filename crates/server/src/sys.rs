//! `$SYS/broker/...`: mosquitto's figures (clients, messages, bytes, subscriptions,
//! retained messages, uptime, and midge's store size), published retained every
//! `sys_interval` by the router from core's counters and the server's byte counters.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use midge_codec::{QoS, TopicName};
use midge_core::{Action, Broker, Message};

use crate::Counters;

/// Publishes mosquitto's `$SYS/broker/...` figures (retained) every interval.
pub(crate) struct SysPublisher {
    interval: Duration,
    next: Instant,
    started: Instant,
}

impl SysPublisher {
    /// Publishing every `interval` from `started` (a zero interval: never).
    pub(crate) fn new(interval: Duration, started: Instant) -> SysPublisher {
        SysPublisher {
            interval,
            next: started,
            started,
        }
    }

    /// When the next `$SYS` publication is due (`None` when `$SYS` is off).
    pub(crate) fn next_due(&self) -> Option<Instant> {
        (!self.interval.is_zero()).then_some(self.next)
    }

    pub(crate) fn publish_if_due(
        &mut self,
        now: Instant,
        broker: &mut Broker,
        counters: &Counters,
        store_bytes: Option<u64>,
        out: &mut Vec<Action>,
    ) {
        if self.interval.is_zero() || now < self.next {
            return;
        }
        self.next = now + self.interval;
        let s = broker.stats();
        let figures: [(&str, String); 17] = [
            (
                "version",
                format!("midge version {}", env!("CARGO_PKG_VERSION")),
            ),
            (
                "uptime",
                format!("{} seconds", now.duration_since(self.started).as_secs()),
            ),
            ("clients/connected", s.clients_connected.to_string()),
            ("clients/active", s.clients_connected.to_string()),
            ("clients/total", s.sessions.to_string()),
            (
                "clients/disconnected",
                s.sessions.saturating_sub(s.clients_connected).to_string(),
            ),
            (
                "clients/maximum",
                s.clients_maximum.max(s.clients_connected).to_string(),
            ),
            ("messages/received", s.messages_received.to_string()),
            ("messages/sent", s.messages_sent.to_string()),
            ("publish/messages/received", s.messages_received.to_string()),
            ("publish/messages/sent", s.messages_sent.to_string()),
            ("publish/messages/dropped", s.messages_dropped.to_string()),
            (
                "bytes/received",
                counters.bytes_received.load(Ordering::Relaxed).to_string(),
            ),
            (
                "bytes/sent",
                counters.bytes_sent.load(Ordering::Relaxed).to_string(),
            ),
            ("subscriptions/count", s.subscriptions.to_string()),
            (
                // not in mosquitto: refused logins (bad password, no identity, anonymous)
                "clients/failed logins",
                counters.auth_failures.load(Ordering::Relaxed).to_string(),
            ),
            ("retained messages/count", s.retained.to_string()),
        ];
        for (name, value) in figures {
            let Ok(topic) = TopicName::new(format!("$SYS/broker/{name}")) else {
                continue;
            };
            broker.publish(now, Message::new(topic, value, QoS::AtMostOnce, true), out);
        }
        if let (Some(bytes), Ok(topic)) = (store_bytes, TopicName::new("$SYS/broker/store/bytes")) {
            broker.publish(
                now,
                Message::new(topic, bytes.to_string(), QoS::AtMostOnce, true),
                out,
            );
        }
        let Ok(topic) = TopicName::new("$SYS/broker/store/messages/count") else {
            return;
        };
        broker.publish(
            now,
            Message::new(topic, s.queued.to_string(), QoS::AtMostOnce, true),
            out,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use midge_core::Config;

    #[test]
    fn figures_are_published_retained_once_per_interval_and_never_with_a_zero_interval() {
        let t0 = Instant::now();
        let mut broker = Broker::new(Config::default());
        let counters = Counters::default();
        let mut out = Vec::new();
        let mut sys = SysPublisher::new(Duration::from_secs(10), t0);
        assert_eq!(sys.next_due(), Some(t0));
        sys.publish_if_due(t0, &mut broker, &counters, Some(42), &mut out);
        let first = broker.stats().retained_sys;
        assert_eq!(
            first, 19,
            "17 figures, the store's size and its message count"
        );
        assert_eq!(sys.next_due(), Some(t0 + Duration::from_secs(10)));
        // not due yet: nothing published (retained count unchanged, next unchanged)
        sys.publish_if_due(
            t0 + Duration::from_secs(9),
            &mut broker,
            &counters,
            None,
            &mut out,
        );
        assert_eq!(sys.next_due(), Some(t0 + Duration::from_secs(10)));
        // without a store there is no store/bytes figure, the rest are replaced in place
        sys.publish_if_due(
            t0 + Duration::from_secs(10),
            &mut broker,
            &counters,
            None,
            &mut out,
        );
        assert_eq!(broker.stats().retained_sys, first);
        let off = SysPublisher::new(Duration::ZERO, t0);
        assert_eq!(off.next_due(), None);
    }
}
