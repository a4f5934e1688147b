//! The series store's data: tables, topics, rows and bucketed series.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
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

pub(crate) async fn rows(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let table = table_name(path)?;
    let p = Params::parse(
        q.as_deref(),
        &["topic", "client_id", "since", "until", "limit", "order"],
    )?;
    let now = now_ms();
    let order = match p.get("order") {
        None => Order::NewestFirst,
        Some(o) => o
            .parse::<Order>()
            .map_err(|e| ApiError::bad_request(format!("order: {e}")))?,
    };
    let query = RowsQuery {
        table: table.clone(),
        topic: p.get("topic").map(str::to_owned),
        client_id: p.get("client_id").map(str::to_owned),
        since: p.time("since", now)?,
        until: p.time("until", now)?,
        limit: p.limit()?,
        order,
    };
    let store = store(&state)?;
    let found = blocking(store.clone(), move |s| s.rows(&query)).await?;
    if found.is_empty() {
        ensure_table(store, &table).await?;
    }
    let rows: Vec<_> = found
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
    Ok(json_response(
        StatusCode::OK,
        &json!({ "table": table, "rows": rows }),
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
        ],
    )?;
    let now = now_ms();
    let field = p
        .get("field")
        .ok_or_else(|| {
            ApiError::bad_request("field: missing (the JSON field to chart, e.g. temp)")
        })?
        .to_owned();
    let bucket_ms = match p.get("bucket") {
        None => 0,
        Some(b) => {
            parse_duration_ms(b).map_err(|e| ApiError::bad_request(format!("bucket: {e}")))?
        }
    };
    let aggregate = match p.get("agg") {
        None => Aggregate::Avg,
        Some(a) => a
            .parse::<Aggregate>()
            .map_err(|e| ApiError::bad_request(format!("agg: {e}")))?,
    };
    let query = SeriesQuery {
        table: table.clone(),
        field: field.clone(),
        topic: p.get("topic").map(str::to_owned),
        client_id: p.get("client_id").map(str::to_owned),
        since: p.time("since", now)?,
        until: p.time("until", now)?,
        bucket_ms,
        aggregate,
        limit: p.limit()?,
    };
    let store = store(&state)?;
    let found = blocking(store.clone(), move |s| s.series(&query)).await?;
    if found.is_empty() {
        ensure_table(store, &table).await?;
    }
    let points: Vec<_> = found
        .iter()
        .map(|b| json!({ "ts": b.start, "value": b.value, "count": b.count }))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "table": table,
            "field": field,
            "bucket_ms": bucket_ms,
            "agg": p.get("agg").unwrap_or("avg"),
            "points": points,
        }),
    ))
}
