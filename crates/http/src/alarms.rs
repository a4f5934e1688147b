//! The alarms the rules raise (see `midge_hub::alarm`): `GET /api/v1/alarms` (the active
//! ones), `GET /api/v1/alarms/history?limit=N`, `POST /api/v1/alarms/{id}/ack`, and
//! `DELETE /api/v1/alarms/{id}` to clear one by hand. Acknowledging and clearing are
//! published on the alarm's topic, as a raise and a clear by its rule are.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::{ApiError, AppState, json_response};

/// Most history entries one answer gives.
const MAX_LIMIT: usize = 1000;

fn book(state: &AppState) -> Option<std::sync::Arc<midge_hub::Alarms>> {
    state.0.hub.as_ref().map(|h| h.alarms())
}

/// An alarm as the API shows it: the record, plus `since` (when it became what it is now).
fn shown(r: &midge_hub::AlarmRecord) -> Value {
    let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        let since = r.cleared_at.unwrap_or(r.raised_at);
        m.insert("since".into(), json!(since));
    }
    v
}

/// `GET /api/v1/alarms`: the active alarms, most severe first, and how many per severity.
pub(crate) async fn active(State(state): State<AppState>) -> Response {
    let list = book(&state).map(|b| b.active()).unwrap_or_default();
    let mut by_severity = serde_json::Map::new();
    for s in midge_hub::alarm::SEVERITIES {
        let n = list.iter().filter(|r| r.severity == s).count();
        by_severity.insert(s.into(), json!(n));
    }
    json_response(
        StatusCode::OK,
        &json!({
            "alarms": list.iter().map(shown).collect::<Vec<_>>(),
            "active": list.len(),
            "unacknowledged": list.iter().filter(|r| !r.acknowledged).count(),
            "by_severity": by_severity,
        }),
    )
}

#[derive(Debug, Deserialize)]
pub(crate) struct HistoryQuery {
    #[serde(default)]
    limit: Option<String>,
}

/// `GET /api/v1/alarms/history?limit=100`: every alarm, active and cleared, newest first.
pub(crate) async fn history(
    State(state): State<AppState>,
    Query(q): Query<HistoryQuery>,
) -> Result<Response, ApiError> {
    let limit = match q.limit.as_deref() {
        None | Some("") => 100,
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(format!("limit must be 1 to {MAX_LIMIT} (found {s:?})"))
            })?,
    };
    let (list, truncated) = book(&state).map(|b| b.history(limit)).unwrap_or_default();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "alarms": list.iter().map(shown).collect::<Vec<_>>(),
            "truncated": truncated,
        }),
    ))
}

fn id_of(text: &str) -> Result<u64, ApiError> {
    text.parse::<u64>()
        .map_err(|_| ApiError::bad_request(format!("alarm id {text:?} must be a number")))
}

fn change_error(e: midge_hub::AlarmError) -> ApiError {
    match e {
        midge_hub::AlarmError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, e.to_string()),
        midge_hub::AlarmError::Cleared(_) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
    }
}

fn no_alarms() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "alarms are not available on this server (no rules engine)",
    )
}

/// `POST /api/v1/alarms/{id}/ack`: acknowledge (active or cleared; again is no error).
pub(crate) async fn ack(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = id_of(&id)?;
    let b = book(&state).ok_or_else(no_alarms)?;
    let r = b.ack(id, crate::time::now_ms()).map_err(change_error)?;
    Ok(json_response(StatusCode::OK, &shown(&r)))
}

/// `DELETE /api/v1/alarms/{id}`: clear an active alarm by hand (409 when it is cleared).
pub(crate) async fn clear(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = id_of(&id)?;
    let b = book(&state).ok_or_else(no_alarms)?;
    let r = b.clear(id, crate::time::now_ms()).map_err(change_error)?;
    Ok(json_response(StatusCode::OK, &shown(&r)))
}

/// `GET /api/v1/alarms/{id}`.
pub(crate) async fn get_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = id_of(&id)?;
    let b = book(&state).ok_or_else(no_alarms)?;
    let r = b
        .get(id)
        .ok_or_else(|| change_error(midge_hub::AlarmError::NotFound(id)))?;
    Ok(json_response(StatusCode::OK, &shown(&r)))
}
