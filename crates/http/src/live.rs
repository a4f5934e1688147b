//! `GET /api/v1/live?filter=...`: server-sent events. Each stream is its own in-process
//! MQTT 5 connection subscribed (QoS 2, so each message comes with the QoS it was published
//! with) to the stream's filters; it ends when the browser goes away or the server stops. A
//! stream that cannot keep up loses messages (counted) instead of buffering without bound.
//!
//! Each event has an `id`, `<ts>-<n>` (the message's time in ms, a counter of the stream).
//! A browser that reconnects sends the last one back as `Last-Event-ID`; the new stream then
//! starts with the last message of every subscribed topic that changed after that time (from
//! the broker's last values, `"replayed": true`) instead of the retained messages. What it
//! cannot resume: the messages in between on a topic (only its newest is kept), topics the
//! last values forgot (more than `[limits] last_values_topics`), and anything when they are
//! off.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use midge_client::codec::{
    Publish, QoS, RetainHandling, SubscribeProperties, SubscriptionOptions, TopicFilter,
};
use midge_client::{Client, Connector, Event, EventLoop};
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tracing::debug;

use crate::api::{ApiError, AppState};
use crate::publish::{client_id, local_options};
use crate::time::now_ms;

/// Most filters one stream may subscribe to.
const MAX_FILTERS: usize = 32;
/// Time allowed to connect and get the SUBACK.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The live streams of one HTTP server.
pub(crate) struct Live {
    connector: Connector,
    permits: Arc<Semaphore>,
    max: usize,
    buffer: usize,
    dropped: Arc<AtomicU64>,
}

/// Figures for `/metrics` and `/api/v1/stats`.
pub(crate) struct LiveFigures {
    /// Streams open now.
    pub(crate) streams: u64,
    /// Messages dropped for streams that could not keep up, since start.
    pub(crate) dropped: u64,
}

impl Live {
    pub(crate) fn new(connector: Connector, max: usize, buffer: usize) -> Live {
        Live {
            connector,
            permits: Arc::new(Semaphore::new(max)),
            max,
            buffer: buffer.max(1),
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    pub(crate) fn figures(&self) -> LiveFigures {
        let open = self.max.saturating_sub(self.permits.available_permits());
        LiveFigures {
            streams: u64::try_from(open).unwrap_or(u64::MAX),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

/// The stream's filters from the query string (`filter=` repeated).
fn filters(query: Option<&str>) -> Result<Vec<TopicFilter>, ApiError> {
    let mut out: Vec<TopicFilter> = Vec::new();
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if k != "filter" {
            return Err(ApiError::bad_request(format!(
                "unknown parameter {k:?} (expected filter, repeated)"
            )));
        }
        if v.starts_with("$share/") {
            return Err(ApiError::bad_request(format!(
                "filter {v:?}: a shared subscription would take messages from other subscribers"
            )));
        }
        let f = TopicFilter::new(v.as_ref())
            .map_err(|e| ApiError::bad_request(format!("filter {v:?}: {e}")))?;
        if !out.iter().any(|o| o.as_str() == f.as_str()) {
            out.push(f);
        }
    }
    if out.is_empty() {
        return Err(ApiError::bad_request(
            "filter: missing (for example ?filter=sensors/%23)",
        ));
    }
    if out.len() > MAX_FILTERS {
        return Err(ApiError::bad_request(format!(
            "{} filters: at most {MAX_FILTERS} per stream",
            out.len()
        )));
    }
    Ok(out)
}

/// Connect, subscribe and wait for the SUBACK; messages that arrive meanwhile are kept.
async fn subscribe(
    connector: &Connector,
    filters: &[TopicFilter],
    early: &mut Vec<Publish>,
    resume: bool,
) -> Result<(Client, EventLoop), ApiError> {
    let id = client_id("live");
    let (client, mut events, _) = Client::connect(local_options(connector, &id))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot reach the broker: {e}"),
            )
        })?;
    let subs = filters
        .iter()
        .map(|f| {
            let mut o = SubscriptionOptions::qos(QoS::ExactlyOnce);
            if resume {
                // the replay from the last values stands for them
                o.retain_handling = RetainHandling::DoNotSend;
            }
            (f.clone(), o)
        })
        .collect();
    client
        .subscribe_many(subs, SubscribeProperties::default())
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    loop {
        match events.poll().await {
            Ok(Event::SubAck(ack)) => {
                for (f, r) in filters.iter().zip(&ack.reasons) {
                    if r.is_error() {
                        let status = if *r == midge_client::codec::ReasonCode::NOT_AUTHORIZED {
                            StatusCode::FORBIDDEN
                        } else {
                            StatusCode::BAD_REQUEST
                        };
                        return Err(ApiError::new(
                            status,
                            format!(
                                "the broker refused the subscription to {:?}: {}",
                                f.as_str(),
                                r.description()
                            ),
                        ));
                    }
                }
                debug!(client = %id, filters = filters.len(), "live stream subscribed");
                return Ok((client, events));
            }
            Ok(Event::Message(m)) => early.push(m),
            Ok(_) => {}
            Err(e) => {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("lost the broker while subscribing: {e}"),
                ));
            }
        }
    }
}

/// Drive the stream's MQTT connection, handing messages to the SSE body until the body is
/// dropped (the browser went away), the connection ends or the server stops.
async fn pump(
    client: Client,
    mut events: EventLoop,
    tx: mpsc::Sender<Publish>,
    dropped_here: Arc<AtomicU64>,
    dropped_all: Arc<AtomicU64>,
    mut shutdown: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    let drop_one = || {
        dropped_here.fetch_add(1, Ordering::Relaxed);
        dropped_all.fetch_add(1, Ordering::Relaxed);
    };
    loop {
        tokio::select! {
            e = events.poll() => match e {
                Ok(Event::Message(m)) => match tx.try_send(m) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => drop_one(),
                    Err(mpsc::error::TrySendError::Closed(_)) => break,
                },
                Ok(Event::Disconnected(_) | Event::Closed | Event::ConnectionLost(_)) | Err(_) => {
                    // the body ends with the sender
                    return;
                }
                Ok(_) => {}
            },
            _ = tx.closed() => break,
            _ = shutdown.wait_for(|s| *s) => break,
        }
    }
    drop(tx);
    // a clean DISCONNECT, written by the event loop (bounded)
    if client.disconnect().await.is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Ok(e) = events.poll().await {
                if matches!(e, Event::Closed) {
                    break;
                }
            }
        })
        .await;
    }
    debug!("live stream ended");
}

/// One message as the browser gets it, with its time.
fn message_json(m: &Publish, dropped: u64) -> (String, i64) {
    let ts = crate::last::broker_time(m).unwrap_or_else(now_ms);
    let mut v = match std::str::from_utf8(&m.payload) {
        Ok(text) => json!({ "topic": m.topic.as_str(), "payload": text }),
        Err(_) => json!({
            "topic": m.topic.as_str(),
            "payload": base64::engine::general_purpose::STANDARD.encode(&m.payload),
            "encoding": "base64",
        }),
    };
    if let Some(o) = v.as_object_mut() {
        o.insert("qos".into(), json!(m.qos as u8));
        o.insert("retain".into(), json!(m.retain));
        o.insert("ts".into(), json!(ts));
        if dropped > 0 {
            o.insert("dropped".into(), json!(dropped));
        }
    }
    (v.to_string(), ts)
}

/// The time of a `Last-Event-ID` (`<ts>-<n>`).
fn resume_time(headers: &HeaderMap) -> Option<i64> {
    let id = headers.get("last-event-id")?.to_str().ok()?;
    id.split('-').next()?.trim().parse().ok()
}

/// The events replaying, from the last values, the topics of `filters` changed after
/// `since` (each topic once; the topic of the last event itself too when it changed in the
/// same ms, so the browser may get that value again).
async fn replay(state: &AppState, filters: &[TopicFilter], since: i64) -> Vec<SseEvent> {
    let mut seen = std::collections::BTreeMap::new();
    for f in filters {
        let Ok(a) =
            crate::last::query(state, f.clone(), Some(since), crate::last::MAX_ANSWER).await
        else {
            continue;
        };
        for e in a.values {
            seen.entry(e.topic.clone()).or_insert(e);
        }
    }
    let mut entries: Vec<_> = seen.into_values().collect();
    entries.sort_by_key(|e| e.ts);
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let mut v = crate::last::entry_json(e);
            if let Some(o) = v.as_object_mut() {
                o.insert("replayed".into(), json!(true));
            }
            SseEvent::default()
                .id(format!("{}-r{i}", e.ts))
                .data(v.to_string())
        })
        .collect()
}

pub(crate) async fn handler(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let live = &state.0.live;
    let filters = filters(q.as_deref())?;
    let resume = resume_time(&headers).filter(|_| crate::last::enabled(&state));
    let permit = live.permits.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("too many live streams open (at most {})", live.max),
        )
    })?;
    let mut early = Vec::new();
    let (client, events) = tokio::time::timeout(
        SUBSCRIBE_TIMEOUT,
        subscribe(&live.connector, &filters, &mut early, resume.is_some()),
    )
    .await
    .map_err(|_| {
        ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "the broker did not answer the subscription in time",
        )
    })??;
    let (tx, rx) = mpsc::channel(live.buffer.max(early.len()));
    for m in early {
        let _ = tx.try_send(m);
    }
    let dropped_here = Arc::new(AtomicU64::new(0));
    tokio::spawn(pump(
        client,
        events,
        tx,
        dropped_here.clone(),
        live.dropped.clone(),
        state.0.shutdown.clone(),
        permit,
    ));
    let replayed = match resume {
        Some(since) => replay(&state, &filters, since).await,
        None => Vec::new(),
    };
    let live_events = futures_util::stream::unfold(
        (rx, dropped_here, 0u64),
        |(mut rx, dropped, n)| async move {
            let m = rx.recv().await?;
            let (data, ts) = message_json(&m, dropped.load(Ordering::Relaxed));
            let event = SseEvent::default().id(format!("{ts}-{n}")).data(data);
            Some((Ok::<_, Infallible>(event), (rx, dropped, n + 1)))
        },
    );
    let stream = futures_util::StreamExt::chain(
        futures_util::stream::iter(replayed.into_iter().map(Ok::<_, Infallible>)),
        live_events,
    );
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    // proxies (nginx) must not hold the stream back
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_checked_and_deduplicated() {
        let f = filters(Some("filter=a%2F%23&filter=b/%2B/c&filter=a/%23")).unwrap();
        let names: Vec<_> = f.iter().map(|f| f.as_str().to_owned()).collect();
        assert_eq!(names, ["a/#", "b/+/c"]);
        for bad in [
            None,
            Some(""),
            Some("filter="),
            Some("filter=a/%23/b"),
            Some("topic=a"),
            Some("filter=%24share/g/a"),
        ] {
            assert!(filters(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn binary_payloads_are_base64() {
        let topic = midge_client::codec::TopicName::new("t").unwrap();
        let m = Publish::new(topic.clone(), vec![0xff, 0x00]);
        let v: serde_json::Value = serde_json::from_str(&message_json(&m, 0).0).unwrap();
        assert_eq!(v["encoding"], "base64");
        assert_eq!(v["payload"], "/wA=");
        let m = Publish::new(topic, "{\"temp\": 31.5}");
        let mut m = m;
        m.qos = QoS::AtLeastOnce;
        let v: serde_json::Value = serde_json::from_str(&message_json(&m, 3).0).unwrap();
        assert_eq!(v["payload"], "{\"temp\": 31.5}");
        assert!(v.get("encoding").is_none());
        assert_eq!(v["dropped"], 3);
        assert_eq!(v["qos"], 1);
    }
}
