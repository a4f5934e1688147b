//! Rules people can edit: change one in place (`PUT`), enable or disable it (`PATCH`), try
//! one on a message without running it (`POST /api/v1/rules/test`), and per-rule counts (and
//! active alarms by severity) in `/metrics`.

use std::fmt::Write as _;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::{ApiError, AppState, JsonBody, json_response, no_hub, rule_error};

/// `PUT /api/v1/rules/{name}`: the rule's new settings (the body of `POST /api/v1/rules`;
/// `name` may be left out).
pub(crate) async fn replace(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonBody(mut spec): JsonBody<midge_hub::RuleSpec>,
) -> Result<Response, ApiError> {
    let hub = state.0.hub.clone().ok_or_else(no_hub)?;
    if spec.name.is_empty() {
        spec.name.clone_from(&name);
    }
    Ok(match hub.replace(&name, spec).await {
        Ok(()) => json_response(StatusCode::OK, &json!({ "name": name })),
        Err(e) => rule_error(e),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Patch {
    enabled: bool,
}

/// `PATCH /api/v1/rules/{name}` `{"enabled": false}`.
pub(crate) async fn patch(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonBody(p): JsonBody<Patch>,
) -> Result<Response, ApiError> {
    let hub = state.0.hub.clone().ok_or_else(no_hub)?;
    Ok(match hub.set_enabled(&name, p.enabled).await {
        Ok(()) => json_response(
            StatusCode::OK,
            &json!({ "name": name, "enabled": p.enabled }),
        ),
        Err(e) => rule_error(e),
    })
}

/// A dry run's message.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TestBody {
    sql: String,
    topic: String,
    /// Text, or any JSON value (sent as its JSON text).
    #[serde(default)]
    payload: Option<Value>,
    /// A binary payload.
    #[serde(default)]
    payload_base64: Option<String>,
    #[serde(default)]
    qos: u8,
    #[serde(default)]
    retain: bool,
    #[serde(default)]
    clientid: String,
    #[serde(default)]
    username: Option<String>,
}

/// `POST /api/v1/rules/test` `{"sql", "topic", "payload"}`: the row the rule would produce
/// from that message, or why it produces none; nothing runs, nothing is stored.
pub(crate) async fn test(JsonBody(b): JsonBody<TestBody>) -> Result<Response, ApiError> {
    let rule = match midge_hub::midge_rules::Rule::parse(&b.sql) {
        Ok(r) => r,
        Err(e) => {
            return Ok(json_response(
                StatusCode::BAD_REQUEST,
                &json!({ "error": e.to_string(), "problems": [format!("sql: {e}")] }),
            ));
        }
    };
    if b.qos > 2 {
        return Err(ApiError::bad_request("qos must be 0, 1 or 2"));
    }
    midge_client::codec::TopicName::new(b.topic.as_str())
        .map_err(|e| ApiError::bad_request(format!("topic {:?}: {e}", b.topic)))?;
    let payload: Vec<u8> = match (b.payload, b.payload_base64) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "give payload or payload_base64, not both",
            ));
        }
        (Some(Value::String(s)), None) => s.into_bytes(),
        (Some(v), None) => v.to_string().into_bytes(),
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|e| ApiError::bad_request(format!("payload_base64: {e}")))?,
        (None, None) => Vec::new(),
    };
    let input = midge_hub::midge_rules::Input {
        topic: &b.topic,
        payload: &payload,
        client_id: &b.clientid,
        username: b.username.as_deref(),
        qos: b.qos,
        retain: b.retain,
        timestamp_ms: crate::time::now_ms(),
    };
    let filters: Vec<&str> = rule.filters().iter().map(|f| f.as_str()).collect();
    Ok(match rule.test(&input) {
        Ok(row) => json_response(
            StatusCode::OK,
            &json!({ "matched": true, "row": row, "filters": filters }),
        ),
        Err(why) => json_response(
            StatusCode::OK,
            &json!({
                "matched": false,
                "row": null,
                "reason": why.to_string(),
                "filters": filters,
            }),
        ),
    })
}

/// A Prometheus label value: `\`, `"` and newlines escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Per-rule counts for `/metrics` (`midge_rule_matched_total{rule="..."}`, passed, failed).
pub(crate) async fn metrics(state: &AppState, out: &mut String) {
    let Some(hub) = state.0.hub.clone() else {
        return;
    };
    let active = hub.alarms().active();
    let _ = writeln!(
        out,
        "# HELP midge_alarms_active Alarms raised by rules and not cleared, by severity."
    );
    let _ = writeln!(out, "# TYPE midge_alarms_active gauge");
    for s in midge_hub::alarm::SEVERITIES {
        let n = active.iter().filter(|a| a.severity == s).count();
        let _ = writeln!(out, "midge_alarms_active{{severity=\"{s}\"}} {n}");
    }
    let mut rules: Vec<midge_hub::RuleStatus> = hub.status().into_iter().map(|(r, _)| r).collect();
    rules.extend(hub.disabled().await);
    if rules.is_empty() {
        return;
    }
    for (name, help, pick) in [
        (
            "midge_rule_matched_total",
            "Messages whose topic matched the rule's FROM clause (kept across restarts with a data folder).",
            (|r: &midge_hub::RuleStatus| r.matched) as fn(&midge_hub::RuleStatus) -> u64,
        ),
        (
            "midge_rule_passed_total",
            "Messages that passed the rule's WHERE and produced a row.",
            |r: &midge_hub::RuleStatus| r.passed,
        ),
        (
            "midge_rule_failed_total",
            "Messages whose evaluation or actions failed for the rule.",
            |r: &midge_hub::RuleStatus| r.failed,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        for r in &rules {
            let _ = writeln!(out, "{name}{{rule=\"{}\"}} {}", label(&r.name), pick(r));
        }
    }
}

/// `PUT`, `PATCH` and `DELETE` on `/api/v1/rules/test` reach the rule named `test`.
pub(crate) async fn put_named_test(
    state: State<AppState>,
    body: JsonBody<midge_hub::RuleSpec>,
) -> Result<Response, ApiError> {
    replace(state, Path("test".to_owned()), body).await
}

pub(crate) async fn patch_named_test(
    state: State<AppState>,
    body: JsonBody<Patch>,
) -> Result<Response, ApiError> {
    patch(state, Path("test".to_owned()), body).await
}

pub(crate) async fn delete_named_test(State(state): State<AppState>) -> Result<Response, ApiError> {
    let hub = state.0.hub.clone().ok_or_else(no_hub)?;
    Ok(match hub.remove("test").await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => rule_error(e),
    })
}
