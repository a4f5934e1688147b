//! The Baidu Cloud TSDB data API (v1), so that its SDKs, tools and scripts work against
//! midge: metrics, fields and tags listed, datapoints written, queried and exported, over
//! the datapoint model of [`midge_series::points`].
//!
//! ```text
//! GET  /v1/metric                        {"metrics":[...]}
//! GET  /v1/metric/{metric}/field         {"fields":{"name":{"type":"Number"|"String"}}}
//! GET  /v1/metric/{metric}/tag           {"tags":{"key":["v1","v2"]}}
//! POST /v1/datapoint                     {"datapoints":[...]}   (all or none)
//! PUT  /v1/datapoint?query               {"queries":[...]} -> {"results":[...]}
//! GET  /v1/datapoint?query=<json>        the same (the SDK's pre-signed URLs)
//! PUT  /v1/datapoint?export              {"metrics":[...],"filters":{"start","end"}},
//!                                        streamed as {"datapoints":[...]}
//! ```
//!
//! Errors are `{"requestId","code","message"}` with Baidu's codes, and every answer carries
//! `x-bce-request-id`. A `database` query parameter is accepted and ignored (midge has one
//! database). Bodies may be gzipped (`Content-Encoding: gzip`).

mod body;
mod error;
mod export;
pub(crate) mod keys;
mod query;
pub(crate) mod sign;
mod write;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use midge_series::{SeriesError, SeriesStore};
use serde_json::json;

use crate::api::{AppState, json_response};
pub(crate) use body::over_limit;
pub(crate) use error::{REQUEST_ID, TsdbError, request_id};

/// The TSDB routes and the access key routes.
pub(crate) fn routes() -> Router<AppState> {
    let v1 = Router::new()
        .route("/v1/metric", get(metrics))
        .route("/v1/metric/{metric}/field", get(fields))
        .route("/v1/metric/{metric}/tag", get(tags))
        .route(
            "/v1/datapoint",
            get(query::get_handler)
                .post(write::handler)
                .put(datapoint_put),
        )
        .layer(middleware::map_response(with_request_id));
    v1.route("/api/v1/access-keys", get(keys::list).post(keys::create))
        .route("/api/v1/access-keys/{id}", delete(keys::revoke))
}

/// Every `/v1` answer names a request id (errors carry the same one in their body).
async fn with_request_id(mut response: Response) -> Response {
    if !response.headers().contains_key(REQUEST_ID)
        && let Ok(v) = HeaderValue::from_str(&request_id())
    {
        response.headers_mut().insert(REQUEST_ID, v);
    }
    response
}

/// The query parameters of a `/v1` request (decoded; `database` and `authorization` are
/// among them and ignored by the handlers).
pub(crate) fn params(req: &Request) -> Vec<(String, String)> {
    form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn has_param(params: &[(String, String)], name: &str) -> bool {
    params.iter().any(|(k, _)| k == name)
}

/// `PUT /v1/datapoint?query` or `?export`.
async fn datapoint_put(State(state): State<AppState>, req: Request) -> Result<Response, TsdbError> {
    let p = params(&req);
    if has_param(&p, "query") {
        query::put_handler(state, req).await
    } else if has_param(&p, "export") {
        export::handler(state, req).await
    } else {
        Err(TsdbError::new(
            StatusCode::BAD_REQUEST,
            "InvalidHTTPRequest",
            "PUT /v1/datapoint needs ?query (query datapoints) or ?export (export them)",
        ))
    }
}

pub(crate) fn store(state: &AppState) -> Result<Arc<SeriesStore>, TsdbError> {
    state.0.series.clone().ok_or_else(|| {
        TsdbError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "no series store is configured",
        )
    })
}

/// Runs a blocking store call off the runtime's workers.
pub(crate) async fn blocking<T: Send + 'static>(
    store: Arc<SeriesStore>,
    f: impl FnOnce(&SeriesStore) -> Result<T, SeriesError> + Send + 'static,
) -> Result<T, TsdbError> {
    match tokio::task::spawn_blocking(move || f(&store)).await {
        Ok(r) => r.map_err(TsdbError::from_series),
        Err(e) => {
            tracing::warn!(error = %e, "TSDB store task failed");
            Err(TsdbError::internal("the store call failed"))
        }
    }
}

async fn metrics(State(state): State<AppState>) -> Result<Response, TsdbError> {
    let list = blocking(store(&state)?, |s| s.metrics()).await?;
    Ok(json_response(StatusCode::OK, &json!({ "metrics": list })))
}

/// 404 unless `metric` has points.
async fn known_metric(store: Arc<SeriesStore>, metric: &str) -> Result<(), TsdbError> {
    let list = blocking(store, |s| s.metrics()).await?;
    if list.iter().any(|m| m == metric) {
        Ok(())
    } else {
        Err(TsdbError::new(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            format!("no metric {metric:?}"),
        ))
    }
}

async fn fields(
    State(state): State<AppState>,
    Path(metric): Path<String>,
) -> Result<Response, TsdbError> {
    let store = store(&state)?;
    let m = metric.clone();
    let fields = blocking(store.clone(), move |s| s.metric_fields(&m)).await?;
    if fields.is_empty() {
        known_metric(store, &metric).await?;
    }
    let map: serde_json::Map<String, serde_json::Value> = fields
        .into_iter()
        .map(|(name, t)| (name, json!({ "type": t.as_str() })))
        .collect();
    Ok(json_response(StatusCode::OK, &json!({ "fields": map })))
}

async fn tags(
    State(state): State<AppState>,
    Path(metric): Path<String>,
) -> Result<Response, TsdbError> {
    let store = store(&state)?;
    let m = metric.clone();
    let tags = blocking(store.clone(), move |s| s.metric_tags(&m)).await?;
    if tags.is_empty() {
        known_metric(store, &metric).await?;
    }
    Ok(json_response(StatusCode::OK, &json!({ "tags": tags })))
}

/// The `/v1` answer for a method a route does not take.
pub(crate) fn method_not_allowed(method: &str, path: &str) -> Response {
    TsdbError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        format!("{method} is not allowed on {path}"),
    )
    .into_response()
}

/// The `/v1` answer for a route that does not exist.
pub(crate) fn not_found(path: &str) -> Response {
    TsdbError::new(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        format!("no such route: {path}"),
    )
    .into_response()
}
