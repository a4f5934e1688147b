//! Last values: for every topic published (not `$` topics: `$SYS` and midge's own), the last
//! message, when the broker accepted it, and how many messages the topic has had, so that a
//! dashboard that (re)loads shows every value at once and a first-run page can list the
//! topics flowing with their rates.
//!
//! The cost per PUBLISH is one hash lookup and one `Arc` clone of the message the router
//! already holds (no payload copy). A new topic copies its name once. The table is bounded
//! by [`crate::Config::last_values_topics`]: when full, the least recently updated topics are
//! forgotten first (a batch of 1/32 of the bound at a time, so that a stream of new topics
//! costs a scan per batch, not per message), and counted.
//!
//! The message kept is the one routed, whose payload (and topic) may be a slice of the read
//! buffer it was decoded from: kept for long, it would pin that whole buffer. So
//! [`LastValues::settle`] (run by [`crate::Broker::tick`]) copies out, once, the entries that
//! were not replaced during a whole tick, dropping payloads larger than
//! [`LAST_VALUE_MAX_PAYLOAD`] (their size stays). A busy topic is replaced before that and
//! never copied.

use std::sync::Arc;

use ahash::AHashMap;
use bytes::Bytes;
use bytestring::ByteString;
use midge_codec::{QoS, TopicFilter, TopicName, matches_filter};

use crate::Message;

/// Largest payload kept whole by the last values (bytes); a larger one is kept as its size.
pub const LAST_VALUE_MAX_PAYLOAD: usize = 64 * 1024;

/// The last message of one topic, as [`crate::Broker::last_values`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastValue {
    /// The topic.
    pub topic: ByteString,
    /// The payload; `None` when larger than [`LAST_VALUE_MAX_PAYLOAD`].
    pub payload: Option<Bytes>,
    /// The payload's size in bytes.
    pub size: usize,
    /// QoS it was published with.
    pub qos: QoS,
    /// Retain flag it was published with.
    pub retain: bool,
    /// When the broker accepted it (ms since the Unix epoch, see
    /// [`crate::Broker::set_wall_clock`]; 0 = unknown).
    pub ts: i64,
    /// Messages published to the topic since the broker started (or since the topic was
    /// last forgotten to make room).
    pub count: u64,
    /// The client that published it (`None` for the broker's own messages).
    pub client_id: Option<ByteString>,
}

#[derive(Debug)]
struct Entry {
    msg: Arc<Message>,
    /// The payload's size (the settled copy of a large one is empty).
    size: usize,
    ts: i64,
    count: u64,
    /// Update order (for forgetting the least recently updated first).
    seq: u64,
    /// The message is the table's own copy (see [`LastValues::settle`]).
    settled: bool,
}

/// The table.
#[derive(Debug, Default)]
pub(crate) struct LastValues {
    by_topic: AHashMap<ByteString, Entry>,
    max: usize,
    seq: u64,
    /// `seq` at the previous [`LastValues::settle`].
    settled_upto: u64,
    /// Topics forgotten to make room for new ones.
    pub(crate) evicted: u64,
}

impl LastValues {
    pub(crate) fn new(max: usize) -> LastValues {
        LastValues {
            max,
            ..LastValues::default()
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.by_topic.len()
    }

    /// Keep `msg` as its topic's last message, accepted at `ts`.
    #[inline]
    pub(crate) fn record(&mut self, msg: &Arc<Message>, ts: i64) {
        if self.max == 0 || msg.topic.as_str().starts_with('$') {
            return;
        }
        self.seq += 1;
        if let Some(e) = self.by_topic.get_mut(msg.topic.as_str()) {
            e.msg = msg.clone();
            e.size = msg.payload.len();
            e.ts = ts;
            e.count += 1;
            e.seq = self.seq;
            e.settled = false;
            return;
        }
        self.insert(msg, ts);
    }

    #[cold]
    fn insert(&mut self, msg: &Arc<Message>, ts: i64) {
        if self.by_topic.len() >= self.max {
            self.evict();
        }
        // the key is the table's own copy: it lives as long as the topic is kept
        let key = ByteString::from(msg.topic.as_str());
        self.by_topic.insert(
            key,
            Entry {
                msg: msg.clone(),
                size: msg.payload.len(),
                ts,
                count: 1,
                seq: self.seq,
                settled: false,
            },
        );
    }

    /// Forget the least recently updated topics: enough to fall below the bound, and a
    /// batch of 1/32 of it, so that a stream of new topics pays one scan per batch.
    fn evict(&mut self) {
        let excess = self.by_topic.len() + 1 - self.max.min(self.by_topic.len() + 1);
        let n = (self.max / 32).max(1).max(excess).min(self.by_topic.len());
        if n == 0 {
            return;
        }
        let mut seqs: Vec<u64> = self.by_topic.values().map(|e| e.seq).collect();
        let (_, &mut threshold, _) = seqs.select_nth_unstable(n - 1);
        // seqs are unique: exactly n go
        self.by_topic.retain(|_, e| e.seq > threshold);
        self.evicted += n as u64;
    }

    /// Copy out the messages not replaced since the previous call (see the module comment).
    pub(crate) fn settle(&mut self) {
        let upto = self.settled_upto;
        self.settled_upto = self.seq;
        if upto == 0 {
            return;
        }
        for (topic, e) in &mut self.by_topic {
            if e.settled || e.seq > upto {
                continue;
            }
            let payload = if e.msg.payload.len() <= LAST_VALUE_MAX_PAYLOAD {
                Bytes::copy_from_slice(&e.msg.payload)
            } else {
                Bytes::new()
            };
            let Ok(name) = TopicName::new(topic.clone()) else {
                continue;
            };
            if let Some(m) = Arc::get_mut(&mut e.msg) {
                // no delivery holds it any more (the usual case): in place, no new message
                m.topic = name;
                m.payload = payload;
                m.properties = Default::default();
            } else {
                let mut own = Message::new(name, payload, e.msg.qos, e.msg.retain);
                own.origin = e.msg.origin.clone();
                e.msg = Arc::new(own);
            }
            e.settled = true;
        }
    }

    fn value(topic: &ByteString, e: &Entry) -> LastValue {
        let size = e.size;
        LastValue {
            topic: topic.clone(),
            payload: (size <= LAST_VALUE_MAX_PAYLOAD).then(|| e.msg.payload.clone()),
            size,
            qos: e.msg.qos,
            retain: e.msg.retain,
            ts: e.ts,
            count: e.count,
            client_id: e.msg.origin.as_ref().map(|o| o.client_id.clone()),
        }
    }

    /// The topics matching `filter` (updated at `since` or later when given), in topic
    /// order, at most `limit`, and how many matched in all.
    pub(crate) fn matching(
        &self,
        filter: &TopicFilter,
        since: Option<i64>,
        limit: usize,
    ) -> (Vec<LastValue>, usize) {
        let f = filter.filter();
        let fresh = |e: &Entry| since.is_none_or(|s| e.ts >= s);
        if !filter.has_wildcards() {
            return match self.by_topic.get_key_value(f) {
                Some((t, e)) if fresh(e) => {
                    let v = Self::value(t, e);
                    (if limit > 0 { vec![v] } else { Vec::new() }, 1)
                }
                _ => (Vec::new(), 0),
            };
        }
        let mut all: Vec<(&ByteString, &Entry)> = self
            .by_topic
            .iter()
            .filter(|(t, e)| fresh(e) && matches_filter(f, t))
            .collect();
        let matched = all.len();
        if limit < matched {
            all.select_nth_unstable_by(limit, |a, b| a.0.cmp(b.0));
            all.truncate(limit);
        }
        all.sort_unstable_by(|a, b| a.0.cmp(b.0));
        (
            all.into_iter().map(|(t, e)| Self::value(t, e)).collect(),
            matched,
        )
    }
}
