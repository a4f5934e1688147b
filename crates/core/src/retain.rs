//! Retained messages: one per topic, replaced by the next retained publish, removed by an
//! empty one, expired with their Message Expiry Interval.
//!
//! Kept in topic order, so a wildcard subscription whose filter starts with literal levels
//! (`devices/42/#`, `site/+/temp`) reads only the topics under that prefix instead of every
//! retained message: with 100,000 retained device states, a device subscribing to its own
//! subtree must not cost the router a scan of all of them. Filters that start with a
//! wildcard (`+/temp`, `#`) still look at every topic, as they may match any.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Instant;

use bytestring::ByteString;
use midge_codec::{TopicFilter, matches_filter};

use crate::Message;

#[derive(Debug, Default)]
pub(crate) struct Retained {
    by_topic: BTreeMap<ByteString, Arc<Message>>,
    /// How many of them carry an expiry (none: the periodic expiry pass is skipped).
    expiring: usize,
}

/// The literal levels of a filter before its first wildcard, without the trailing `/`:
/// every topic the filter matches starts with it.
fn literal_prefix(filter: &str) -> &str {
    let (mut end, mut start) = (0, 0);
    for level in filter.split('/') {
        if level == "+" || level == "#" {
            break;
        }
        end = start + level.len();
        start = end + 1;
    }
    filter.get(..end).unwrap_or("")
}

impl Retained {
    pub(crate) fn len(&self) -> usize {
        self.by_topic.len()
    }

    /// How many are on topics starting with `$` (`$SYS`: the broker's own).
    pub(crate) fn dollar_len(&self) -> usize {
        self.by_topic
            .range::<str, _>((Bound::Included("$"), Bound::Excluded("%")))
            .count()
    }

    /// Store (or with an empty payload, remove) the retained message of its topic.
    /// Returns false if it was refused because the store is full.
    pub(crate) fn set(&mut self, msg: Message, max: usize) -> bool {
        if msg.payload.is_empty() {
            if let Some(old) = self.by_topic.remove(msg.topic.as_str()) {
                self.forget(&old);
            }
            return true;
        }
        if max != 0 && self.by_topic.len() >= max && !self.by_topic.contains_key(msg.topic.as_str())
        {
            return false;
        }
        let mut msg = msg;
        msg.retain = true;
        // a retained message can live for months: copy it out of the read buffer it was
        // decoded from, so it does not pin that buffer (and the other packets in it)
        msg.payload = bytes::Bytes::copy_from_slice(&msg.payload);
        msg.topic = msg.topic.detached();
        let key = msg.topic.as_byte_string().clone();
        if msg.expires_at.is_some() {
            self.expiring += 1;
        }
        if let Some(old) = self.by_topic.insert(key, Arc::new(msg)) {
            self.forget(&old);
        }
        true
    }

    fn forget(&mut self, old: &Message) {
        if old.expires_at.is_some() {
            self.expiring = self.expiring.saturating_sub(1);
        }
    }

    /// Every live retained message matching the filter (all of them: no cap).
    pub(crate) fn matching(&self, filter: &TopicFilter, now: Instant) -> Vec<Arc<Message>> {
        let live = |m: &Arc<Message>| m.expires_at.is_none_or(|at| at > now);
        if !filter.has_wildcards() {
            return self
                .by_topic
                .get(filter.filter())
                .filter(|m| live(m))
                .cloned()
                .into_iter()
                .collect();
        }
        let f = filter.filter();
        let prefix = literal_prefix(f);
        // in topic order (deterministic for clients and tests)
        self.by_topic
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(t, _)| t.starts_with(prefix))
            .filter(|(t, m)| live(m) && matches_filter(f, t))
            .map(|(_, m)| m.clone())
            .collect()
    }

    /// The earliest expiry of a retained message (a scan: for restore only).
    pub(crate) fn earliest_expiry(&self) -> Option<Instant> {
        if self.expiring == 0 {
            return None;
        }
        self.by_topic.values().filter_map(|m| m.expires_at).min()
    }

    pub(crate) fn expire(&mut self, now: Instant) {
        if self.expiring == 0 {
            return;
        }
        let before = self.by_topic.len();
        self.by_topic
            .retain(|_, m| m.expires_at.is_none_or(|at| at > now));
        let gone = before - self.by_topic.len();
        self.expiring = self.expiring.saturating_sub(gone);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use midge_codec::{QoS, TopicName};

    fn msg(topic: &str) -> Message {
        Message::new(
            TopicName::new(topic.to_string()).unwrap_or_else(|e| panic!("{e}")),
            "x",
            QoS::AtMostOnce,
            true,
        )
    }

    fn topics(r: &Retained, filter: &str) -> Vec<String> {
        let f = TopicFilter::new(filter.to_string()).unwrap_or_else(|e| panic!("{e}"));
        r.matching(&f, Instant::now())
            .iter()
            .map(|m| m.topic.to_string())
            .collect()
    }

    #[test]
    fn literal_prefixes() {
        assert_eq!(literal_prefix("a/b/#"), "a/b");
        assert_eq!(literal_prefix("a/+/c"), "a");
        assert_eq!(literal_prefix("+/c"), "");
        assert_eq!(literal_prefix("#"), "");
        assert_eq!(literal_prefix("/a/#"), "/a");
        assert_eq!(literal_prefix("a//+"), "a/");
        assert_eq!(literal_prefix("a/b"), "a/b");
    }

    /// The prefix range finds exactly what a scan of every topic finds.
    #[test]
    fn wildcard_matches_equal_a_full_scan() {
        let mut r = Retained::default();
        let all = [
            "a",
            "a/b",
            "a/b/c",
            "a/bc",
            "a-b",
            "a/b/c/d",
            "/a",
            "/a/b",
            "a//b",
            "a/",
            "b/b",
            "$SYS/x",
            "$SYS",
            "sport",
            "sport/tennis",
            "sport/tennis/player1",
            "sports",
        ];
        for t in all {
            assert!(r.set(msg(t), 0));
        }
        for f in [
            "#",
            "+",
            "+/#",
            "a/#",
            "a/+",
            "a/+/c",
            "a/b/#",
            "/#",
            "/+",
            "+/b",
            "a//+",
            "a/+/#",
            "$SYS/#",
            "sport/#",
            "sport/+",
            "sport/tennis/#",
            "+/tennis/#",
            "a",
            "a/",
        ] {
            let mut want: Vec<&str> = all
                .iter()
                .copied()
                .filter(|t| matches_filter(f, t))
                .collect();
            want.sort_unstable();
            assert_eq!(topics(&r, f), want, "filter {f}");
        }
    }

    #[test]
    fn expiry_pass_runs_only_while_something_can_expire() {
        let mut r = Retained::default();
        r.set(msg("a"), 0);
        assert_eq!(r.expiring, 0);
        let mut m = msg("b");
        let now = Instant::now();
        m.expires_at = Some(now);
        r.set(m, 0);
        assert_eq!(r.expiring, 1);
        r.expire(now);
        assert_eq!(r.len(), 1);
        assert_eq!(r.expiring, 0);
        let mut m = msg("c");
        m.expires_at = Some(now);
        r.set(m, 0);
        // replaced by a message without expiry, then cleared
        r.set(msg("c"), 0);
        assert_eq!(r.expiring, 0);
        let mut empty = msg("c");
        empty.payload = bytes::Bytes::new();
        r.set(empty, 0);
        assert_eq!(r.len(), 1);
    }
}
