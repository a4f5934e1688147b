//! The series store's data: tables, topics, rows and bucketed series.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine as _;
use midge_series::{
    Aggregate, Order, RowsQuery, SeriesError, SeriesQuery, SeriesStore, TableInfo, TopicInfo,
};
use serde_json::json;

use crate::api::{ApiError, AppState, json_response};
use crate::time::{now_ms, parse_duration_ms, parse_time};

/// Query parameters, each allowed at most once, unknown ones refused.
pub(crate) struct Params(HashMap<String, String>);

impl Params {
    pub(crate) fn parse(query: Option<&str>, allowed: &[&str]) -> Result<Params, ApiError> {
        let mut map = HashMap::new();
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            if !allowed.contains(&k.as_ref()) {
                return Err(ApiError::bad_request(format!(
                    "unknown parameter {k:?} (expected one of: {})",
                    allowed.join(", ")
                )));
            }
            if map.insert(k.clone().into_owned(), v.into_owned()).is_some() {
                return Err(ApiError::bad_request(format!(
                    "parameter {k:?} given more than once"
                )));
            }
        }
        Ok(Params(map))
    }

    /// A non-empty value (an empty one counts as absent).
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn time(&self, key: &str, now: i64) -> Result<Option<i64>, ApiError> {
        self.get(key)
            .map(|v| parse_time(v, now).map_err(|e| ApiError::bad_request(format!("{key}: {e}"))))
            .transpose()
    }

    fn limit(&self) -> Result<Option<usize>, ApiError> {
        self.get("limit")
            .map(|v| {
                v.parse::<usize>().map_err(|_| {
                    ApiError::bad_request(format!("limit: expected a whole number, got {v:?}"))
                })
            })
            .transpose()
    }
}

fn store(state: &AppState) -> Result<Arc<SeriesStore>, ApiError> {
    state.0.series.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no series store is configured",
        )
    })
}

/// Run a blocking store call off the runtime's workers.
async fn blocking<T: Send + 'static>(
    store: Arc<SeriesStore>,
    f: impl FnOnce(&SeriesStore) -> Result<T, SeriesError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(move || f(&store)).await {
        Ok(r) => r.map_err(series_error),
        Err(e) => {
            tracing::warn!(error = %e, "series query task failed");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the query failed",
            ))
        }
    }
}

fn series_error(e: SeriesError) -> ApiError {
    match e {
        SeriesError::InvalidTable { .. }
        | SeriesError::InvalidField { .. }
        | SeriesError::InvalidFilter { .. }
        | SeriesError::InvalidTopic { .. }
        | SeriesError::UnknownAggregate(_)
        | SeriesError::UnknownOrder(_) => ApiError::bad_request(e.to_string()),
        SeriesError::DiskFull { .. } => {
            ApiError::new(StatusCode::INSUFFICIENT_STORAGE, e.to_string())
        }
        other => {
            tracing::warn!(error = %other, "series store error");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string())
        }
    }
}

fn table_name(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(t)| t)
        .map_err(|e| ApiError::bad_request(e.body_text()))
}

/// 404 unless `table` exists (asked only when a query found nothing).
async fn ensure_table(store: Arc<SeriesStore>, table: &str) -> Result<(), ApiError> {
    let name = table.to_owned();
    if blocking(store, move |s| s.has_table(&name)).await? {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no table {table:?}"),
        ))
    }
}

fn table_json(t: &TableInfo) -> serde_json::Value {
    json!({ "name": t.name, "rows": t.rows, "first_ts": t.first_ts, "last_ts": t.last_ts })
}

fn topic_json(t: &TopicInfo) -> serde_json::Value {
    json!({ "topic": t.topic, "rows": t.rows, "last_ts": t.last_ts })
}

pub(crate) async fn tables(
    State(state): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    Params::parse(q.as_deref(), &[])?;
    let list = blocking(store(&state)?, SeriesStore::tables).await?;
    let list: Vec<_> = list.iter().map(table_json).collect();
    Ok(json_response(StatusCode::OK, &json!({ "tables": list })))
}

pub(crate) async fn topics(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let table = table_name(path)?;
    Params::parse(q.as_deref(), &[])?;
    let store = store(&state)?;
    let t = table.clone();
    let list = blocking(store.clone(), move |s| s.topics(&t)).await?;
    if list.is_empty() {
        ensure_table(store, &table).await?;
    }
    let list: Vec<_> = list.iter().map(topic_json).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "table": table, "topics": list }),
    ))
}

/// `since` and `until`, refused when `since` is after `until`.
fn range(p: &Params, now: i64) -> Result<(Option<i64>, Option<i64>), ApiError> {
    let since = p.time("since", now)?;
    let until = p.time("until", now)?;
    if let (Some(s), Some(u)) = (since, until)
        && s > u
    {
        return Err(ApiError::bad_request(format!(
            "since ({s}) is after until ({u}): nothing could match"
        )));
    }
    Ok((since, until))
}

/// An opaque paging cursor: URL-safe base64 of `<kind>:<numbers>`.
fn encode_cursor(text: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

/// The numbers of a cursor of `kind` made by [`encode_cursor`].
fn decode_cursor(cursor: &str, kind: &str) -> Result<Vec<i64>, ApiError> {
    let bad = || {
        ApiError::bad_request(format!(
            "cursor: {cursor:?} is not a cursor of this query (send back the \"next\" of the previous answer)"
        ))
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let mut parts = text.split(':');
    if parts.next() != Some(kind) {
        return Err(bad());
    }
    parts.map(|n| n.parse::<i64>().map_err(|_| bad())).collect()
}

fn order_tag(order: Order) -> &'static str {
    match order {
        Order::NewestFirst => "rd",
        Order::OldestFirst => "ra",
    }
}

pub(crate) async fn rows(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let table = table_name(path)?;
    let p = Params::parse(
        q.as_deref(),
        &[
            "topic",
            "client_id",
            "since",
            "until",
            "limit",
            "order",
            "cursor",
        ],
    )?;
    let now = now_ms();
    let order = match p.get("order") {
        None => Order::NewestFirst,
        Some(o) => o
            .parse::<Order>()
            .map_err(|e| ApiError::bad_request(format!("order: {e}")))?,
    };
    let after = match p.get("cursor") {
        None => None,
        Some(c) => match decode_cursor(c, order_tag(order))?.as_slice() {
            [ts, id] => Some((*ts, *id)),
            _ => return Err(ApiError::bad_request("cursor: not a rows cursor")),
        },
    };
    let (since, until) = range(&p, now)?;
    let query = RowsQuery {
        table: table.clone(),
        topic: p.get("topic").map(str::to_owned),
        client_id: p.get("client_id").map(str::to_owned),
        since,
        until,
        limit: p.limit()?,
        order,
    };
    let store = store(&state)?;
    let page = blocking(store.clone(), move |s| s.rows_page(&query, after)).await?;
    if page.rows.is_empty() {
        ensure_table(store, &table).await?;
    }
    let rows: Vec<_> = page
        .rows
        .into_iter()
        .map(|r| {
            json!({
                "id": r.id,
                "ts": r.ts,
                "topic": r.topic,
                "client_id": r.client_id,
                "data": r.data,
            })
        })
        .collect();
    let next = page
        .next
        .map(|(ts, id)| encode_cursor(&format!("{}:{ts}:{id}", order_tag(order))));
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "table": table,
            "rows": rows,
            "truncated": next.is_some(),
            "next": next,
        }),
    ))
}

pub(crate) async fn series(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let table = table_name(path)?;
    let p = Params::parse(
        q.as_deref(),
        &[
            "field",
            "topic",
            "client_id",
            "since",
            "until",
            "bucket",
            "agg",
            "limit",
            "points",
            "cursor",
        ],
    )?;
    let now = now_ms();
    let field = p
        .get("field")
        .ok_or_else(|| {
            ApiError::bad_request("field: missing (the JSON field to chart, e.g. temp)")
        })?
        .to_owned();
    let aggregate = match p.get("agg") {
        None => Aggregate::Avg,
        Some(a) => a
            .parse::<Aggregate>()
            .map_err(|e| ApiError::bad_request(format!("agg: {e}")))?,
    };
    let (since, mut until) = range(&p, now)?;
    if let Some(c) = p.get("cursor") {
        match decode_cursor(c, "s")?.as_slice() {
            // the next page is older: it ends where the previous one began
            [u] => until = Some(until.map_or(*u, |q| q.min(*u))),
            _ => return Err(ApiError::bad_request("cursor: not a series cursor")),
        }
    }
    let store = store(&state)?;
    let points = match p.get("points") {
        None => None,
        Some(n) => {
            let n = n.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "points: expected a whole number above 0 (the chart's width), got {n:?}"
                ))
            })?;
            if p.get("bucket").is_some() || p.get("limit").is_some() {
                return Err(ApiError::bad_request(
                    "points: give either points (the server picks the bucket) or bucket and limit",
                ));
            }
            // one bucket more than asked: the range need not start on a bucket's edge
            Some(n.min(store.options().max_rows_per_query.saturating_sub(1).max(1)))
        }
    };
    let (bucket_ms, limit) = match points {
        None => {
            let bucket_ms = match p.get("bucket") {
                None => 0,
                Some(b) => parse_duration_ms(b)
                    .map_err(|e| ApiError::bad_request(format!("bucket: {e}")))?,
            };
            (bucket_ms, p.limit()?)
        }
        Some(n) => {
            let from = match since {
                Some(s) => Some(s),
                None => first_ts(store.clone(), &table, &p, until).await?,
            };
            let to = until.unwrap_or(now);
            let span = match from {
                Some(f) => u64::try_from(to.saturating_sub(f)).unwrap_or(0),
                None => 0,
            };
            let width = span.div_ceil(u64::try_from(n).unwrap_or(1)).max(1);
            (width, Some(n + 1))
        }
    };
    let query = SeriesQuery {
        table: table.clone(),
        field: field.clone(),
        topic: p.get("topic").map(str::to_owned),
        client_id: p.get("client_id").map(str::to_owned),
        since,
        until,
        bucket_ms,
        aggregate,
        limit,
    };
    let page = blocking(store.clone(), move |s| s.series_page(&query)).await?;
    if page.points.is_empty() {
        ensure_table(store, &table).await?;
    }
    let points: Vec<_> = page
        .points
        .iter()
        .map(|b| {
            if bucket_ms == 0 {
                json!({ "ts": b.start, "value": b.value, "count": b.count })
            } else {
                json!({
                    "ts": b.start,
                    "value": b.value,
                    "count": b.count,
                    "min": b.min,
                    "max": b.max,
                })
            }
        })
        .collect();
    let next = page.next_until.map(|u| encode_cursor(&format!("s:{u}")));
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "table": table,
            "field": field,
            "bucket_ms": bucket_ms,
            "agg": p.get("agg").unwrap_or("avg"),
            "points": points,
            "truncated": next.is_some(),
            "next": next,
        }),
    ))
}

/// The time of the oldest row of the query's topic and client before `until` (for
/// `points=N` without `since`).
async fn first_ts(
    store: Arc<SeriesStore>,
    table: &str,
    p: &Params,
    until: Option<i64>,
) -> Result<Option<i64>, ApiError> {
    let q = RowsQuery {
        table: table.to_owned(),
        topic: p.get("topic").map(str::to_owned),
        client_id: p.get("client_id").map(str::to_owned),
        since: None,
        until,
        limit: Some(1),
        order: Order::OldestFirst,
    };
    let rows = blocking(store, move |s| s.rows(&q)).await?;
    Ok(rows.first().map(|r| r.ts))
}
