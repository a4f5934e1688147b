//! Retained messages: one per topic, replaced by the next retained publish, removed by an
//! empty one, expired with their Message Expiry Interval.

use std::sync::Arc;
use std::time::Instant;

use ahash::AHashMap;
use bytestring::ByteString;
use midge_codec::{TopicFilter, matches_filter};

use crate::Message;

#[derive(Debug, Default)]
pub(crate) struct Retained {
    by_topic: AHashMap<ByteString, Arc<Message>>,
}

impl Retained {
    pub(crate) fn len(&self) -> usize {
        self.by_topic.len()
    }

    /// Store (or with an empty payload, remove) the retained message of its topic.
    /// Returns false if it was refused because the store is full.
    pub(crate) fn set(&mut self, msg: Message, max: usize) -> bool {
        if msg.payload.is_empty() {
            self.by_topic.remove(msg.topic.as_str());
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
        self.by_topic.insert(key, Arc::new(msg));
        true
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
        let mut v: Vec<Arc<Message>> = self
            .by_topic
            .iter()
            .filter(|(t, m)| live(m) && matches_filter(f, t))
            .map(|(_, m)| m.clone())
            .collect();
        // deterministic order for clients and tests
        v.sort_by(|a, b| a.topic.cmp(&b.topic));
        v
    }

    pub(crate) fn expire(&mut self, now: Instant) {
        self.by_topic
            .retain(|_, m| m.expires_at.is_none_or(|at| at > now));
    }
}
