//! Last values: the broker keeps the last message of every topic published (midge-core's
//! `last` module: not `$` topics, so `$SYS` and midge's own `$midge/` traffic stay out; at
//! most `[limits] last_values_topics`, 10,000 by default, the least recently updated
//! forgotten first), so a page that (re)loads shows each widget's value at once instead of
//! "waiting for data" until the device speaks again, and a first run can list the topics
//! flowing. The API asks the router for them, as it does for retained messages.
//!
//! - `GET /api/v1/last?topic=FILTER` (default `#`; `limit`, default and most 10,000) →
//!   `{"filter", "topics": [ENTRY...], "max_topics", "truncated"}`, in topic order.
//! - `GET /api/v1/topics?filter=FILTER&limit=N` (default `#`, 100; at most 10,000) →
//!   `{"topics": [ENTRY...], "total", "truncated"}`, in topic order: the first-run page's
//!   list; rates come from the `count`s of successive polls.
//!
//! An ENTRY is `{"topic", "count", "ts", "qos", "retain", "size", "payload"}` plus
//! `"encoding": "base64"` for a payload that is not UTF-8: `count` is the messages published
//! to the topic since the broker started (or since the topic was forgotten to make room),
//! `ts` when the broker accepted the last one (ms since the epoch), `payload` `null` (with
//! its `size`) above 64 KiB.
//!
//! A live stream resumed with `Last-Event-ID` replays from them the topics that changed
//! since (`live.rs`).

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine as _;
use midge_client::codec::{Publish, TopicFilter};
use midge_server::LastValue;
use serde_json::json;

use crate::api::{ApiError, AppState, json_response};
use crate::data::Params;

/// Most topics one answer lists.
pub(crate) const MAX_ANSWER: usize = 10_000;

/// The user property giving, on messages to in-process clients, when the broker accepted
/// the message (the last one of the name is the broker's).
const ORIGIN_TIME: &str = midge_client::codec::origin::TIME;

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
pub(crate) fn entry_json(e: &LastValue) -> serde_json::Value {
    let mut v = json!({
        "topic": &*e.topic,
        "count": e.count,
        "qos": e.qos.as_u8(),
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

/// Whether the API serves last values (the deprecated `[http] last_values_topics = 0`
/// turns them off here).
pub(crate) fn enabled(state: &AppState) -> bool {
    state.0.last_values
}

/// The broker's last values matching `filter` (changed at `since` or later when given), at
/// most `limit`; 503 when off or the broker is gone.
pub(crate) async fn query(
    state: &AppState,
    filter: TopicFilter,
    since: Option<i64>,
    limit: usize,
) -> Result<midge_server::LastValues, ApiError> {
    let off = || {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "last values are off ([limits] last_values_topics = 0)",
        )
    };
    if !enabled(state) {
        return Err(off());
    }
    let answer = state
        .0
        .server
        .last_values(filter, since, limit)
        .await
        .ok_or_else(|| {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the broker is not running")
        })?;
    if answer.max_topics == 0 {
        return Err(off());
    }
    Ok(answer)
}

fn parse_filter(f: &str) -> Result<TopicFilter, ApiError> {
    TopicFilter::new(f).map_err(|e| ApiError::bad_request(format!("topic {f:?}: {e}")))
}

fn parse_limit(p: &Params, default: usize) -> Result<usize, ApiError> {
    match p.get("limit") {
        None => Ok(default),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(n.min(MAX_ANSWER)),
            _ => Err(ApiError::bad_request(format!(
                "limit must be a number from 1 to {MAX_ANSWER}, not {v:?}"
            ))),
        },
    }
}

/// `GET /api/v1/last?topic=FILTER` (default `#`).
pub(crate) async fn handler(
    State(state): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::parse(q.as_deref(), &["topic", "limit"])?;
    let f = parse_filter(p.get("topic").unwrap_or("#"))?;
    let limit = parse_limit(&p, MAX_ANSWER)?;
    let a = query(&state, f.clone(), None, limit).await?;
    let list: Vec<_> = a.values.iter().map(entry_json).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "filter": f.as_str(),
            "topics": list,
            "max_topics": a.max_topics,
            "truncated": a.matched > a.values.len(),
        }),
    ))
}

/// `GET /api/v1/topics?filter=FILTER&limit=N` (default `#`, 100).
pub(crate) async fn topics(
    State(state): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::parse(q.as_deref(), &["filter", "limit"])?;
    let f = parse_filter(p.get("filter").unwrap_or("#"))?;
    let limit = parse_limit(&p, 100)?;
    let a = query(&state, f, None, limit).await?;
    let list: Vec<_> = a.values.iter().map(entry_json).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "topics": list,
            "total": a.matched,
            "truncated": a.matched > a.values.len(),
        }),
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use midge_client::codec::QoS;

    fn value(payload: Option<&[u8]>, size: usize) -> LastValue {
        LastValue {
            topic: "t".into(),
            payload: payload.map(Bytes::copy_from_slice),
            size,
            qos: QoS::AtLeastOnce,
            retain: true,
            ts: 5,
            count: 3,
            client_id: None,
        }
    }

    #[test]
    fn entries_say_text_base64_or_only_the_size() {
        let v = entry_json(&value(Some(b"7"), 1));
        assert_eq!(
            v,
            json!({"topic": "t", "count": 3, "qos": 1, "retain": true, "ts": 5, "size": 1,
                   "payload": "7"})
        );
        let v = entry_json(&value(Some(&[0xff, 0]), 2));
        assert_eq!(
            (v["payload"].clone(), v["encoding"].clone()),
            (json!("/wA="), json!("base64"))
        );
        let v = entry_json(&value(None, 100_000));
        assert_eq!(
            (v["payload"].clone(), v["size"].clone()),
            (json!(null), json!(100_000))
        );
    }
}
