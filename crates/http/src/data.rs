//! The series store's data: tables, topics, rows and bucketed series.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::Response;
use base64::Engine as _;
use midge_series::{Aggregate, Order, RowsQuery, SeriesError, SeriesQuery, SeriesStore, TopicInfo};
use serde_json::json;

use crate::api::{ApiError, AppState, JsonBody, json_response};
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

fn topic_json(t: &TopicInfo) -> serde_json::Value {
    json!({ "topic": t.topic, "rows": t.rows, "last_ts": t.last_ts })
}

pub(crate) async fn tables(
    State(state): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    Params::parse(q.as_deref(), &[])?;
    let store = store(&state)?;
    let (list, own) = blocking(store.clone(), |s| Ok((s.tables()?, s.table_retentions()?))).await?;
    let list: Vec<_> = list
        .iter()
        .map(|t| {
            let r = Retention::of(&store, &own, &t.name);
            json!({
                "name": t.name,
                "rows": t.rows,
                "first_ts": t.first_ts,
                "last_ts": t.last_ts,
                "retention_days": r.effective_days(),
                "retention_source": r.source(),
                "own_retention_days": r.own,
            })
        })
        .collect();
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

/// What a table keeps: its own days (set in the store), the configuration's for it
/// (`[[series.table]]`) and the store's (`[series] retention_days`); 0 days: forever.
struct Retention {
    own: Option<u32>,
    config: Option<u32>,
    global: Option<u64>,
}

impl Retention {
    fn of(
        store: &SeriesStore,
        own: &std::collections::BTreeMap<String, u32>,
        table: &str,
    ) -> Retention {
        let o = store.options();
        Retention {
            own: own.get(table).copied(),
            config: o.table_retention.get(table).copied(),
            global: o.retention.map(|d| d.as_secs().div_ceil(86_400)),
        }
    }

    /// The days that apply (`None`: forever).
    fn effective_days(&self) -> Option<u64> {
        match self.own.or(self.config) {
            Some(0) => None,
            Some(d) => Some(u64::from(d)),
            None => self.global,
        }
    }

    /// Where they come from: `table` (set from the API), `config`, or `default`.
    fn source(&self) -> &'static str {
        if self.own.is_some() {
            "table"
        } else if self.config.is_some() {
            "config"
        } else {
            "default"
        }
    }

    /// The retention answer: `days` (the table's own, `null`: none), `config_days`,
    /// `default_days` and `effective_days` (`null`: forever).
    fn json(&self, table: &str) -> serde_json::Value {
        json!({
            "table": table,
            "days": self.own,
            "config_days": self.config,
            "default_days": self.global,
            "effective_days": self.effective_days(),
            "source": self.source(),
        })
    }
}

/// Most days a table's retention may be (100 years, as `[series] retention_days`).
const MAX_RETENTION_DAYS: u64 = 36_500;

pub(crate) async fn get_retention(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let table = table_name(path)?;
    Params::parse(q.as_deref(), &[])?;
    let store = store(&state)?;
    ensure_table(store.clone(), &table).await?;
    retention_answer(store, &table).await
}

/// The table's retention as `GET .../retention` answers it.
async fn retention_answer(store: Arc<SeriesStore>, table: &str) -> Result<Response, ApiError> {
    let own = blocking(store.clone(), SeriesStore::table_retentions).await?;
    Ok(json_response(
        StatusCode::OK,
        &Retention::of(&store, &own, table).json(table),
    ))
}

/// `PUT /api/v1/tables/{t}/retention {"days": N}`: the table keeps N days of rows (0:
/// forever); `{"days": null}` makes it follow `[series] retention_days` again. Kept in the
/// store itself.
pub(crate) async fn put_retention(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> Result<Response, ApiError> {
    let table = table_name(path)?;
    let bad = || {
        ApiError::bad_request(format!(
            "days: a whole number of days from 0 (keep forever) to {MAX_RETENTION_DAYS}, or null \
             (follow [series] retention_days), e.g. {{\"days\": 7}}"
        ))
    };
    let obj = body.as_object().ok_or_else(bad)?;
    if let Some(k) = obj.keys().find(|k| k.as_str() != "days") {
        return Err(ApiError::bad_request(format!(
            "unknown field {k:?} (expected days)"
        )));
    }
    let days = match obj.get("days") {
        None => return Err(bad()),
        Some(serde_json::Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .filter(|d| *d <= MAX_RETENTION_DAYS)
                .and_then(|d| u32::try_from(d).ok())
                .ok_or_else(bad)?,
        ),
    };
    let store = store(&state)?;
    ensure_table(store.clone(), &table).await?;
    let t = table.clone();
    blocking(store.clone(), move |s| s.set_table_retention(&t, days)).await?;
    tracing::info!(table, days = ?days, "table retention set");
    retention_answer(store, &table).await
}

/// `DELETE /api/v1/tables/{t}`: drops the table, its rows and its retention.
pub(crate) async fn drop_table(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let table = table_name(path)?;
    Params::parse(q.as_deref(), &[])?;
    let t = table.clone();
    if !blocking(store(&state)?, move |s| s.drop_table(&t)).await? {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no table {table:?}"),
        ));
    }
    tracing::info!(table, "table dropped from the API");
    Ok(json_response(
        StatusCode::OK,
        &json!({ "table": table, "dropped": true }),
    ))
}

/// The `before` of a purge: ms, `-7d`, `now` or RFC 3339 (a JSON number or string).
fn purge_before(v: Option<&serde_json::Value>, now: i64) -> Result<i64, ApiError> {
    let hint = "before: the time rows must be older than to be deleted: ms since the epoch, \
                a relative time (-7d) or RFC 3339, e.g. {\"before\": \"-30d\"}";
    match v {
        Some(serde_json::Value::Number(n)) => n.as_i64().ok_or_else(|| ApiError::bad_request(hint)),
        Some(serde_json::Value::String(s)) if !s.trim().is_empty() => {
            parse_time(s, now).map_err(|e| ApiError::bad_request(format!("before: {e}")))
        }
        _ => Err(ApiError::bad_request(hint)),
    }
}

async fn purge_rows(state: &AppState, table: String, before: i64) -> Result<Response, ApiError> {
    let store = store(state)?;
    ensure_table(store.clone(), &table).await?;
    let t = table.clone();
    let deleted = blocking(store, move |s| s.delete_before(&t, before)).await?;
    tracing::info!(table, before, deleted, "rows purged from the API");
    Ok(json_response(
        StatusCode::OK,
        &json!({ "table": table, "before": before, "deleted": deleted }),
    ))
}

/// `POST /api/v1/tables/{t}/purge {"before": T}`: deletes the rows older than T.
pub(crate) async fn purge(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> Result<Response, ApiError> {
    let table = table_name(path)?;
    Params::parse(q.as_deref(), &[])?;
    let obj = body
        .as_object()
        .ok_or_else(|| ApiError::bad_request("send {\"before\": T}"))?;
    if let Some(k) = obj.keys().find(|k| k.as_str() != "before") {
        return Err(ApiError::bad_request(format!(
            "unknown field {k:?} (expected before)"
        )));
    }
    let before = purge_before(obj.get("before"), now_ms())?;
    purge_rows(&state, table, before).await
}

/// `DELETE /api/v1/tables/{t}/rows?before=T`: the same as the purge, as a query.
pub(crate) async fn delete_rows(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let table = table_name(path)?;
    let p = Params::parse(q.as_deref(), &["before"])?;
    let before = p
        .get("before")
        .map(|b| serde_json::Value::String(b.to_owned()));
    let before = purge_before(before.as_ref(), now_ms())?;
    purge_rows(&state, table, before).await
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for ms since the epoch.
fn iso_utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // civil_from_days (Howard Hinnant)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// One CSV field (RFC 4180): quoted when it holds a comma, a quote, a line break or
/// leading/trailing spaces; quotes doubled.
fn csv_field(out: &mut String, s: &str) {
    if s.contains([',', '"', '\n', '\r']) || s.starts_with(' ') || s.ends_with(' ') {
        out.push('"');
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(s);
    }
}

fn csv_value(out: &mut String, v: Option<&serde_json::Value>) {
    match v {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::String(s)) => csv_field(out, s),
        Some(other) => csv_field(out, &other.to_string()),
    }
}

/// The CSV export: the header (time, topic, client_id, the fields of the first page's rows
/// in order of appearance, other_fields) and every row, page by page; stops when the
/// receiver is gone.
fn write_csv(
    store: &SeriesStore,
    query: RowsQuery,
    tx: &tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>,
) {
    let mut after = None;
    let mut columns: Option<Vec<String>> = None;
    let mut rows_out = 0u64;
    loop {
        let page = match store.rows_page(&query, after) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "CSV export failed");
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
                return;
            }
        };
        let mut out = String::new();
        let cols = columns.get_or_insert_with(|| {
            let mut cols: Vec<String> = Vec::new();
            for r in &page.rows {
                for k in r.data.keys() {
                    if !cols.contains(k) {
                        cols.push(k.clone());
                    }
                }
            }
            out.push_str("time,topic,client_id");
            for c in &cols {
                out.push(',');
                csv_field(&mut out, c);
            }
            out.push_str(",other_fields\r\n");
            cols
        });
        for r in &page.rows {
            out.push_str(&iso_utc(r.ts));
            out.push(',');
            csv_field(&mut out, &r.topic);
            out.push(',');
            csv_field(&mut out, &r.client_id);
            for c in cols.iter() {
                out.push(',');
                csv_value(&mut out, r.data.get(c));
            }
            out.push(',');
            let other: serde_json::Map<String, serde_json::Value> = r
                .data
                .iter()
                .filter(|(k, _)| !cols.contains(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if !other.is_empty() {
                csv_field(&mut out, &serde_json::Value::Object(other).to_string());
            }
            out.push_str("\r\n");
        }
        rows_out += page.rows.len() as u64;
        if tx.blocking_send(Ok(bytes::Bytes::from(out))).is_err() {
            tracing::debug!(rows = rows_out, "CSV export: the client went away");
            return;
        }
        match page.next {
            Some(n) => after = Some(n),
            None => return,
        }
    }
}

/// `GET /api/v1/tables/{t}/rows.csv?topic=&client_id=&since=&until=&order=`: every matching
/// row as CSV (oldest first unless `order=desc`), streamed page by page (no row limit;
/// memory bounded by a few pages).
pub(crate) async fn rows_csv(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let table = table_name(path)?;
    let p = Params::parse(
        q.as_deref(),
        &["topic", "client_id", "since", "until", "order"],
    )?;
    let order = match p.get("order") {
        None => Order::OldestFirst,
        Some(o) => o
            .parse::<Order>()
            .map_err(|e| ApiError::bad_request(format!("order: {e}")))?,
    };
    let (since, until) = range(&p, now_ms())?;
    let store = store(&state)?;
    // refuse a bad table name or topic filter before the 200 goes out
    let probe = RowsQuery {
        table: table.clone(),
        topic: p.get("topic").map(str::to_owned),
        client_id: p.get("client_id").map(str::to_owned),
        since,
        until,
        limit: Some(1),
        order,
    };
    let query = RowsQuery {
        limit: Some(store.options().max_rows_per_query),
        ..probe.clone()
    };
    blocking(store.clone(), move |s| s.rows(&probe)).await?;
    ensure_table(store.clone(), &table).await?;
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tokio::task::spawn_blocking(move || write_csv(&store, query, &tx));
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    let safe: String = table
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect();
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/csv; charset=utf-8")
        .header(
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{safe}.csv\""),
        )
        .body(Body::from_stream(stream))
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_times_and_csv_quoting() {
        assert_eq!(iso_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_utc(1_717_243_200_123), "2024-06-01T12:00:00.123Z");
        assert_eq!(iso_utc(-1), "1969-12-31T23:59:59.999Z");
        let mut s = String::new();
        csv_field(&mut s, "a,\"b\"\nc");
        assert_eq!(s, "\"a,\"\"b\"\"\nc\"");
    }
}
