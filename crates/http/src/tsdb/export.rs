//! `PUT /v1/datapoint?export`: `{"metrics":[...],"filters":{"start","end"}}` (no metrics:
//! every metric; no filters: all time) answered with every point, as
//! `{"datapoints":[{"metric","field","tags","timestamp","value","type"},...]}` — the body
//! `POST /v1/datapoint` takes, so an export can be written back as it is.
//!
//! The answer is streamed: a blocking task reads the store page by page and hands
//! ~64 KiB chunks through a bounded channel to the response body, so memory does not grow
//! with the data, and a client that stops reading stops the task. A store error met after
//! the first bytes were sent cuts the answer off (the JSON is then incomplete).

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use midge_series::points::{Datapoint, PointValue};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::query::time_ms;
use super::{TsdbError, body, store};
use crate::MAX_BODY_BYTES;
use crate::api::AppState;

/// Bytes gathered before a chunk is handed to the body.
const CHUNK: usize = 64 * 1024;
/// Chunks waiting for the client at most.
const QUEUED_CHUNKS: usize = 4;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportBody {
    #[serde(default)]
    metrics: Vec<String>,
    #[serde(default)]
    filters: Option<ExportFilters>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportFilters {
    #[serde(default)]
    start: Option<Value>,
    #[serde(default)]
    end: Option<Value>,
}

/// One point as the write API takes it.
pub(crate) fn point_json(p: Datapoint) -> Value {
    let kind = match &p.value {
        PointValue::Long(_) => "Long",
        PointValue::Double(_) => "Double",
        PointValue::Text(_) => "String",
    };
    let tags: BTreeMap<String, String> = p.tags;
    json!({
        "metric": p.metric,
        "field": p.field,
        "tags": tags,
        "timestamp": p.timestamp,
        "value": p.value.to_json(),
        "type": kind,
    })
}

pub(crate) async fn handler(state: AppState, req: Request) -> Result<Response, TsdbError> {
    let store = store(&state)?;
    let bytes = body::read(req, MAX_BODY_BYTES).await?;
    let parsed: ExportBody = if bytes.iter().all(u8::is_ascii_whitespace) {
        ExportBody::default()
    } else {
        body::parse(&bytes)?
    };
    let now = crate::time::now_ms();
    let filters = parsed.filters.unwrap_or_default();
    let start = match &filters.start {
        None | Some(Value::Null) => i64::MIN,
        Some(v) => {
            time_ms(v, now).map_err(|e| TsdbError::inappropriate(format!("filters.start: {e}")))?
        }
    };
    let end = match &filters.end {
        None | Some(Value::Null) => i64::MAX,
        Some(v) => {
            time_ms(v, now).map_err(|e| TsdbError::inappropriate(format!("filters.end: {e}")))?
        }
    };
    if parsed.metrics.iter().any(String::is_empty) {
        return Err(TsdbError::inappropriate("metrics: a metric name is empty"));
    }
    let metrics = parsed.metrics;
    let (tx, mut rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(QUEUED_CHUNKS);
    tokio::task::spawn_blocking(move || {
        let mut buf = Vec::with_capacity(CHUNK + 1024);
        buf.extend_from_slice(b"{\"datapoints\":[");
        let mut first = true;
        let mut gone = false;
        let result = store.export_points(&metrics, start, end, &mut |p| {
            if !first {
                buf.push(b',');
            }
            first = false;
            if serde_json::to_writer(&mut buf, &point_json(p)).is_err() {
                return false;
            }
            if buf.len() >= CHUNK {
                let chunk = Bytes::from(std::mem::replace(
                    &mut buf,
                    Vec::with_capacity(CHUNK + 1024),
                ));
                if tx.blocking_send(Ok(chunk)).is_err() {
                    gone = true;
                    return false;
                }
            }
            true
        });
        if gone {
            return;
        }
        match result {
            Ok(n) => {
                buf.extend_from_slice(b"]}");
                let _ = tx.blocking_send(Ok(Bytes::from(buf)));
                tracing::debug!(points = n, "TSDB export done");
            }
            Err(e) => {
                tracing::warn!(error = %e, "TSDB export failed part way: answer cut off");
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            }
        }
    });
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let mut response = (StatusCode::OK, Body::from_stream(stream)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}
