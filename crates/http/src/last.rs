//! Last values: one in-process MQTT 5 client subscribed to `#` keeps the last message of
//! every topic it sees, so a page that (re)loads shows each widget's value at once instead
//! of "waiting for data" until the device speaks again. `#` does not match `$` topics, so
//! `$SYS` and midge's own `$midge/` traffic stay out. Memory is bounded: at most
//! [`crate::HttpConfig::last_values_topics`] topics (the least recently updated one is
//! forgotten for a new one, counted) and payloads up to [`MAX_KEPT_PAYLOAD`] bytes (a larger
//! one is remembered by its size only).
//!
//! `GET /api/v1/last?topic=FILTER` answers from it; a live stream resumed with
//! `Last-Event-ID` replays from it the topics that changed since.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine as _;
use bytes::Bytes;
use midge_client::codec::{Publish, QoS, SubscribeProperties, SubscriptionOptions, TopicFilter};
use midge_client::{Client, Connector, Event};
use serde_json::json;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::api::{ApiError, AppState, json_response};
use crate::data::Params;
use crate::publish::{client_id, local_options};
use crate::time::now_ms;

/// Largest payload kept whole (bytes); a larger one is kept as its size.
pub(crate) const MAX_KEPT_PAYLOAD: usize = 64 * 1024;

/// The last message of one topic.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The payload, `None` when it was larger than [`MAX_KEPT_PAYLOAD`].
    pub(crate) payload: Option<Bytes>,
    /// The payload's size in bytes.
    pub(crate) size: usize,
    pub(crate) qos: u8,
    pub(crate) retain: bool,
    /// When the broker accepted it (ms since the epoch; when it arrived here if unknown).
    pub(crate) ts: i64,
    /// Order of arrival here (for forgetting the least recently updated topic).
    seq: u64,
}

#[derive(Debug, Default)]
struct Table {
    by_topic: HashMap<String, Entry>,
    /// `seq` → topic: the least recently updated topic first.
    by_age: BTreeMap<u64, String>,
    seq: u64,
}

/// The last values of one HTTP server.
#[derive(Debug)]
pub(crate) struct LastValues {
    table: Mutex<Table>,
    max_topics: usize,
    /// Topics forgotten to make room for new ones, since start.
    pub(crate) evicted: AtomicU64,
}

impl LastValues {
    pub(crate) fn new(max_topics: usize) -> LastValues {
        LastValues {
            table: Mutex::new(Table::default()),
            max_topics,
            evicted: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether values are kept at all (`last_values_topics` above 0).
    pub(crate) fn enabled(&self) -> bool {
        self.max_topics > 0
    }

    /// Topics held now.
    pub(crate) fn len(&self) -> usize {
        self.lock().by_topic.len()
    }

    /// Keep `m` as its topic's last message.
    pub(crate) fn record(&self, m: &Publish) {
        if !self.enabled() {
            return;
        }
        let entry = |seq| Entry {
            payload: (m.payload.len() <= MAX_KEPT_PAYLOAD).then(|| m.payload.clone()),
            size: m.payload.len(),
            qos: m.qos as u8,
            retain: m.retain,
            ts: broker_time(m).unwrap_or_else(now_ms),
            seq,
        };
        let mut t = self.lock();
        t.seq += 1;
        let seq = t.seq;
        let topic = m.topic.as_str();
        if let Some(old) = t.by_topic.get_mut(topic) {
            let before = old.seq;
            *old = entry(seq);
            t.by_age.remove(&before);
            t.by_age.insert(seq, topic.to_owned());
            return;
        }
        while t.by_topic.len() >= self.max_topics {
            let Some((_, oldest)) = t.by_age.pop_first() else {
                break;
            };
            t.by_topic.remove(&oldest);
            self.evicted.fetch_add(1, Ordering::Relaxed);
        }
        t.by_topic.insert(topic.to_owned(), entry(seq));
        t.by_age.insert(seq, topic.to_owned());
    }

    /// The topics matching `filter` (and updated at or after `after_ts` when given: a message
    /// of the same ms may be newer), in topic order.
    pub(crate) fn matching(&self, filter: &str, after_ts: Option<i64>) -> Vec<(String, Entry)> {
        let t = self.lock();
        let mut out: Vec<(String, Entry)> = t
            .by_topic
            .iter()
            .filter(|(topic, e)| {
                midge_codec::matches_filter(filter, topic) && after_ts.is_none_or(|a| e.ts >= a)
            })
            .map(|(topic, e)| (topic.clone(), e.clone()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Run the subscriber until the server stops, reconnecting when the connection ends.
    pub(crate) fn start(self: Arc<Self>, connector: Connector, shutdown: watch::Receiver<bool>) {
        if !self.enabled() {
            return;
        }
        tokio::spawn(async move {
            let mut shutdown = shutdown;
            loop {
                tokio::select! {
                    () = self.run_once(&connector) => {}
                    _ = shutdown.wait_for(|s| *s) => return,
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.wait_for(|s| *s) => return,
                }
            }
        });
    }

    async fn run_once(&self, connector: &Connector) {
        let id = client_id("last");
        let (client, mut events, _) = match Client::connect(local_options(connector, &id)).await {
            Ok(c) => c,
            Err(e) => {
                debug!(error = %e, "last values: cannot connect");
                return;
            }
        };
        let Ok(all) = TopicFilter::new("#") else {
            return;
        };
        // QoS 2: each message comes at the QoS it was published with
        if let Err(e) = client
            .subscribe_many(
                vec![(all, SubscriptionOptions::qos(QoS::ExactlyOnce))],
                SubscribeProperties::default(),
            )
            .await
        {
            warn!(error = %e, "last values: cannot subscribe");
            return;
        }
        loop {
            match events.poll().await {
                Ok(Event::Message(m)) => self.record(&m),
                Ok(Event::Disconnected(_) | Event::Closed | Event::ConnectionLost(_)) | Err(_) => {
                    return;
                }
                Ok(_) => {}
            }
        }
    }
}

/// The user property giving, on messages to in-process clients, when the broker accepted
/// the message (`midge_core::ORIGIN_TIME`; the last one of the name is the broker's).
const ORIGIN_TIME: &str = "midge-time";

/// The `midge-time` the broker gives its in-process clients.
pub(crate) fn broker_time(m: &Publish) -> Option<i64> {
    m.properties
        .user_properties
        .iter()
        .rev()
        .find(|(k, _)| AsRef::<str>::as_ref(k) == ORIGIN_TIME)
        .and_then(|(_, v)| AsRef::<str>::as_ref(v).parse().ok())
}

/// One entry as JSON: `payload` text, or base64 with `"encoding": "base64"`; a payload too
/// large to keep is `null` with its `size`.
pub(crate) fn entry_json(topic: &str, e: &Entry) -> serde_json::Value {
    let mut v = json!({
        "topic": topic,
        "qos": e.qos,
        "retain": e.retain,
        "ts": e.ts,
        "size": e.size,
    });
    if let Some(o) = v.as_object_mut() {
        match &e.payload {
            None => {
                o.insert("payload".into(), serde_json::Value::Null);
            }
            Some(p) => match std::str::from_utf8(p) {
                Ok(text) => {
                    o.insert("payload".into(), json!(text));
                }
                Err(_) => {
                    o.insert(
                        "payload".into(),
                        json!(base64::engine::general_purpose::STANDARD.encode(p)),
                    );
                    o.insert("encoding".into(), json!("base64"));
                }
            },
        }
    }
    v
}

/// `GET /api/v1/last?topic=FILTER` (default `#`).
pub(crate) async fn handler(
    State(state): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::parse(q.as_deref(), &["topic"])?;
    let filter = p.get("topic").unwrap_or("#");
    let f = TopicFilter::new(filter)
        .map_err(|e| ApiError::bad_request(format!("topic {filter:?}: {e}")))?;
    let last = &state.0.last;
    if !last.enabled() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "last values are off ([http] last_values_topics = 0)",
        ));
    }
    let list: Vec<_> = last
        .matching(f.as_str(), None)
        .iter()
        .map(|(t, e)| entry_json(t, e))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "filter": f.as_str(),
            "topics": list,
            "max_topics": last.max_topics,
        }),
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn msg(topic: &str, payload: &[u8]) -> Publish {
        Publish::new(
            midge_client::codec::TopicName::new(topic).unwrap(),
            payload.to_vec(),
        )
    }

    #[test]
    fn the_least_recently_updated_topic_makes_room() {
        let l = LastValues::new(2);
        l.record(&msg("a", b"1"));
        l.record(&msg("b", b"1"));
        l.record(&msg("a", b"2"));
        l.record(&msg("c", b"1"));
        let topics: Vec<String> = l.matching("#", None).into_iter().map(|(t, _)| t).collect();
        assert_eq!(topics, ["a", "c"]);
        assert_eq!(l.evicted.load(Ordering::Relaxed), 1);
        let a = &l.matching("a", None)[0].1;
        assert_eq!(a.payload.as_deref(), Some(&b"2"[..]));
    }

    #[test]
    fn large_payloads_are_kept_as_their_size() {
        let l = LastValues::new(10);
        l.record(&msg("big", &vec![b'x'; MAX_KEPT_PAYLOAD + 1]));
        let (t, e) = &l.matching("big", None)[0];
        let v = entry_json(t, e);
        assert_eq!(v["payload"], serde_json::Value::Null);
        assert_eq!(v["size"], MAX_KEPT_PAYLOAD + 1);
        l.record(&msg("bin", &[0xff, 0]));
        let (t, e) = &l.matching("bin", None)[0];
        assert_eq!(entry_json(t, e)["encoding"], "base64");
    }

    #[test]
    fn off_keeps_nothing() {
        let l = LastValues::new(0);
        l.record(&msg("a", b"1"));
        assert_eq!(l.len(), 0);
    }
}
