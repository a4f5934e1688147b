//! The router, the shared state, the JSON error shape and the small routes (health, stats,
//! metrics, rules).

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::watch;

use crate::{BODY_READ_TIMEOUT, HttpConfig, HttpDeps, HttpError, MAX_BODY_BYTES};
use crate::{assets, auth, dashboard, data, host, live, publish, serve};

/// Everything the handlers share.
#[derive(Clone)]
pub(crate) struct AppState(pub(crate) Arc<Inner>);

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppState")
    }
}

pub(crate) struct Inner {
    pub(crate) server: midge_server::ServerHandle,
    pub(crate) series: Option<Arc<midge_series::SeriesStore>>,
    pub(crate) hub: Option<Arc<midge_hub::HubService>>,
    pub(crate) listeners: Vec<crate::ListenerInfo>,
    pub(crate) cluster: Option<Arc<dyn midge_server::cluster::ClusterView>>,
    /// Opens in-process MQTT connections (devices publishing over HTTP).
    pub(crate) connector: midge_client::Connector,
    pub(crate) publisher: publish::Publisher,
    pub(crate) live: live::Live,
    /// Whether `/api/v1/last`, `/api/v1/topics` and live resumes are served (the
    /// broker keeps the values).
    pub(crate) last_values: bool,
    pub(crate) share: crate::share::Tokens,
    pub(crate) dashboard: dashboard::Dashboard,
    pub(crate) auth: auth::Auth,
    pub(crate) keys: crate::tsdb::keys::Keys,
    pub(crate) hosts: host::HostCheck,
    pub(crate) conns: Arc<serve::Connections>,
    pub(crate) shutdown: watch::Receiver<bool>,
}

impl AppState {
    pub(crate) async fn new(
        config: &HttpConfig,
        deps: HttpDeps,
        shutdown: watch::Receiver<bool>,
    ) -> Result<AppState, HttpError> {
        let auth = auth::Auth::load(config).await?;
        let keys = crate::tsdb::keys::Keys::load(config).await?;
        let dashboard = dashboard::Dashboard::load(config).await?;
        Ok(AppState(Arc::new(Inner {
            server: deps.server,
            series: deps.series,
            hub: deps.hub,
            listeners: deps.listeners,
            cluster: deps.cluster,
            connector: deps.connector.clone(),
            publisher: publish::Publisher::new(deps.connector.clone()),
            live: live::Live::new(deps.connector, config.max_live_streams, config.live_buffer),
            last_values: config.last_values_topics > 0,
            share: crate::share::Tokens::load(config.dashboard_file.as_deref()),
            dashboard,
            auth,
            keys,
            hosts: host::HostCheck::new(config),
            conns: Arc::new(serve::Connections::new(config.max_connections)),
            shutdown,
        })))
    }
}

/// Every route.
pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/health", get(health))
        .route("/api/v1/stats", get(stats))
        .route("/metrics", get(metrics))
        .route("/api/v1/rules", get(rules).post(add_rule))
        .route(
            "/api/v1/rules/test",
            post(crate::rules_api::test)
                .put(crate::rules_api::put_named_test)
                .patch(crate::rules_api::patch_named_test)
                .delete(crate::rules_api::delete_named_test),
        )
        .route(
            "/api/v1/rules/{name}",
            axum::routing::delete(remove_rule)
                .put(crate::rules_api::replace)
                .patch(crate::rules_api::patch),
        )
        .route("/api/v1/alarms", get(crate::alarms::active))
        .route("/api/v1/alarms/history", get(crate::alarms::history))
        .route(
            "/api/v1/alarms/{id}",
            get(crate::alarms::get_one).delete(crate::alarms::clear),
        )
        .route("/api/v1/alarms/{id}/ack", post(crate::alarms::ack))
        .route("/api/v1/tables", get(data::tables))
        .route(
            "/api/v1/tables/{table}",
            axum::routing::delete(data::drop_table),
        )
        .route("/api/v1/tables/{table}/topics", get(data::topics))
        .route(
            "/api/v1/tables/{table}/rows",
            get(data::rows).delete(data::delete_rows),
        )
        .route("/api/v1/tables/{table}/rows.csv", get(data::rows_csv))
        .route("/api/v1/tables/{table}/purge", post(data::purge))
        .route(
            "/api/v1/tables/{table}/retention",
            get(data::get_retention).put(data::put_retention),
        )
        .route("/api/v1/tables/{table}/series", get(data::series))
        .route("/api/v1/publish", post(publish::handler))
        .route("/api/v1/live", get(live::handler))
        .route("/api/v1/last", get(crate::last::handler))
        .route("/api/v1/topics", get(crate::last::topics))
        .route(
            "/api/v1/tokens",
            get(crate::share::list).post(crate::share::create),
        )
        .route(
            "/api/v1/tokens/{id}",
            axum::routing::delete(crate::share::revoke),
        )
        .route(
            "/api/v1/dashboard",
            get(dashboard::legacy_get_handler).put(dashboard::legacy_put_handler),
        )
        .route(
            "/api/v1/dashboards",
            get(dashboard::list_handler).post(dashboard::create_handler),
        )
        .route(
            "/api/v1/dashboards/{id}",
            get(dashboard::get_handler)
                .put(dashboard::put_handler)
                .delete(dashboard::delete_handler),
        )
        .route(
            "/api/v1/dashboards/{id}/export",
            get(dashboard::export_handler),
        )
        .route("/api/v1/session", get(auth::session))
        .route("/topics/{*topic}", post(crate::ingest::handler))
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/logout", get(auth::logout).post(auth::logout))
        .route("/", get(assets::index))
        .route("/client", get(assets::client))
        .route("/assets/{file}", get(assets::file))
        .merge(crate::tsdb::routes())
        .merge(crate::devices::routes())
        .merge(crate::listeners::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), auth::require))
        // a share token is checked (and its routes limited) before credentials are asked for
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::share::require,
        ))
        // before the credentials: a rebound page is refused whatever it sends
        .layer(middleware::from_fn_with_state(state.clone(), host::require))
        .layer(middleware::map_response(common_headers))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

async fn common_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// An error answer: `{"error": message}` with its status.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_response(self.status, &json!({ "error": self.message }))
    }
}

/// Writes `text` to `path` atomically (temporary file, fsync, rename; the folder made if
/// missing) on a blocking thread. A failure is logged and answered 500, the message saying
/// `"{what} not saved to FILE: why"` (`what`: "the dashboard was").
pub(crate) async fn save_file(
    path: &std::path::Path,
    text: Vec<u8>,
    what: &str,
) -> Result<(), ApiError> {
    let p = path.to_path_buf();
    let saved = tokio::task::spawn_blocking(move || {
        if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        midge_auth::write_atomic(&p, &text)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    saved.map(|_| ()).map_err(|e| {
        tracing::warn!(file = %path.display(), error = %e, "{what} not saved");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{what} not saved to {}: {e}", path.display()),
        )
    })
}

/// A JSON answer.
pub(crate) fn json_response(status: StatusCode, value: &serde_json::Value) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        value.to_string(),
    )
        .into_response()
}

/// A JSON request body: `Content-Type: application/json` required (so that a page on
/// another site cannot send it without a CORS preflight), at most [`MAX_BODY_BYTES`],
/// parsed with every error described.
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';')
                    .next()
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
            });
        if !json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send the body as JSON with Content-Type: application/json",
            ));
        }
        let read = tokio::time::timeout(BODY_READ_TIMEOUT, Bytes::from_request(req, state));
        let bytes = read.await.map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "request body not received within {} s",
                    BODY_READ_TIMEOUT.as_secs()
                ),
            )
        })?;
        let bytes = bytes.map_err(|r| {
            let status = r.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    status,
                    format!("request body larger than {MAX_BODY_BYTES} bytes"),
                )
            } else {
                ApiError::new(status, r.body_text())
            }
        })?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request(format!("bad JSON body: {e}")))
    }
}

async fn not_found(req: Request) -> Response {
    if req.uri().path().starts_with("/v1/") {
        return crate::tsdb::not_found(req.uri().path());
    }
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no such route: {}", req.uri().path()),
    )
    .into_response()
}

async fn method_not_allowed(req: Request) -> Response {
    if req.uri().path().starts_with("/v1/") {
        return crate::tsdb::method_not_allowed(req.method().as_str(), req.uri().path());
    }
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
    .into_response()
}

async fn health() -> Response {
    json_response(StatusCode::OK, &json!({ "status": "ok" }))
}

async fn server_stats(state: &AppState) -> Result<midge_server::ServerStats, ApiError> {
    state
        .0
        .server
        .stats()
        .await
        .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the broker is not running"))
}

async fn stats(State(state): State<AppState>) -> Result<Response, ApiError> {
    let s = server_stats(&state).await?;
    let b = &s.broker;
    let live = state.0.live.figures();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "messages_received": b.messages_received,
            "messages_sent": b.messages_sent,
            "messages_dropped": b.messages_dropped,
            "clients_connected": b.clients_connected,
            "clients_maximum": b.clients_maximum,
            // the user's own, without midge's in-process clients and `$SYS` topics
            "clients_user": b.clients_connected.saturating_sub(b.clients_internal),
            "clients_internal": b.clients_internal,
            "retained_user": b.retained.saturating_sub(b.retained_sys),
            "retained_sys": b.retained_sys,
            "sessions": b.sessions,
            "subscriptions": b.subscriptions,
            "retained": b.retained,
            "queued": b.queued,
            "bytes_received": s.bytes_received,
            "bytes_sent": s.bytes_sent,
            "connections": s.connections,
            "failed_logins": s.failed_logins,
            "store_bytes": s.store_bytes,
            "live_streams": live.streams,
            "live_dropped": live.dropped,
            "http_auth_failures": state.0.auth.refused.load(Ordering::Relaxed),
            "http_connections": state.0.conns.open(),
            "http_connections_refused": state.0.conns.refused.load(Ordering::Relaxed),
            "http_host_refused": state.0.hosts.refused.load(Ordering::Relaxed),
            "time": crate::time::now_ms(),
        }),
    ))
}

/// One Prometheus metric.
fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    let _ = writeln!(out, "{name} {value}");
}

async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let s = server_stats(&state).await?;
    let b = &s.broker;
    let live = state.0.live.figures();
    let n = |v: usize| u64::try_from(v).unwrap_or(u64::MAX);
    let mut out = String::with_capacity(2048);
    for (name, kind, help, value) in [
        (
            "midge_messages_received_total",
            "counter",
            "PUBLISH packets received from clients.",
            b.messages_received,
        ),
        (
            "midge_messages_sent_total",
            "counter",
            "PUBLISH packets sent to clients.",
            b.messages_sent,
        ),
        (
            "midge_messages_dropped_total",
            "counter",
            "Messages dropped (queue full, slow client, too large for the client).",
            b.messages_dropped,
        ),
        (
            "midge_bytes_received_total",
            "counter",
            "Bytes read from clients.",
            s.bytes_received,
        ),
        (
            "midge_bytes_sent_total",
            "counter",
            "Bytes written to clients.",
            s.bytes_sent,
        ),
        (
            "midge_failed_logins_total",
            "counter",
            "Connections refused for bad credentials or anonymous access.",
            s.failed_logins,
        ),
        (
            "midge_clients_connected",
            "gauge",
            "Connected MQTT clients.",
            n(b.clients_connected),
        ),
        (
            "midge_clients_maximum",
            "gauge",
            "Most clients connected at once since the broker started.",
            n(b.clients_maximum),
        ),
        (
            "midge_connections",
            "gauge",
            "Open connections (network and in-process).",
            n(s.connections),
        ),
        (
            "midge_sessions",
            "gauge",
            "Sessions, connected or not.",
            n(b.sessions),
        ),
        (
            "midge_subscriptions",
            "gauge",
            "Subscriptions.",
            n(b.subscriptions),
        ),
        (
            "midge_retained_messages",
            "gauge",
            "Retained messages.",
            n(b.retained),
        ),
        (
            "midge_queued_messages",
            "gauge",
            "Messages waiting in session queues.",
            n(b.queued),
        ),
        (
            "midge_http_live_streams",
            "gauge",
            "Open live streams (server-sent events) of the HTTP API.",
            live.streams,
        ),
        (
            "midge_http_live_dropped_total",
            "counter",
            "Messages not sent to a live stream that could not keep up.",
            live.dropped,
        ),
        (
            "midge_http_last_values_topics",
            "gauge",
            "Topics whose last message the broker keeps (/api/v1/last, /api/v1/topics).",
            n(b.last_values),
        ),
        (
            "midge_http_last_values_evicted_total",
            "counter",
            "Topics the last values forgot to make room for new ones ([limits] last_values_topics reached).",
            b.last_values_evicted,
        ),
        (
            "midge_http_auth_failures_total",
            "counter",
            "HTTP requests refused for missing or wrong credentials.",
            state.0.auth.refused.load(Ordering::Relaxed),
        ),
        (
            "midge_http_connections",
            "gauge",
            "Open HTTP connections (keep-alive and live streams included).",
            n(state.0.conns.open()),
        ),
        (
            "midge_http_connections_refused_total",
            "counter",
            "HTTP connections closed at once because max_connections were open.",
            state.0.conns.refused.load(Ordering::Relaxed),
        ),
        (
            "midge_http_host_refused_total",
            "counter",
            "Anonymous HTTP requests refused because their Host was not an IP address, localhost or an allowed name.",
            state.0.hosts.refused.load(Ordering::Relaxed),
        ),
    ] {
        metric(&mut out, name, kind, help, value);
    }
    if let Some(bytes) = s.store_bytes {
        metric(
            &mut out,
            "midge_store_bytes",
            "gauge",
            "Size of the durable store in bytes.",
            bytes,
        );
    }
    crate::rules_api::metrics(&state, &mut out).await;
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        out,
    )
        .into_response())
}

async fn rules(State(state): State<AppState>) -> Response {
    let Some(hub) = state.0.hub.clone() else {
        return json_response(StatusCode::OK, &json!({ "rules": [] }));
    };
    let specs = hub.api_rules().await;
    let disabled = hub.disabled().await;
    let list: Vec<serde_json::Value> = hub
        .status()
        .into_iter()
        .chain(
            disabled
                .into_iter()
                .map(|r| (r, midge_hub::RuleSource::Api)),
        )
        .map(|(r, source)| {
            let spec = specs.iter().find(|s| s.name == r.name);
            json!({
                "name": r.name,
                "sql": r.sql,
                "filters": r.filters,
                "actions": r.actions,
                "matched": r.matched,
                "passed": r.passed,
                "failed": r.failed,
                "last_error": r.last_error,
                "source": source,
                "enabled": spec.is_none_or(|s| s.enabled),
                "spec": spec,
            })
        })
        .collect();
    json_response(StatusCode::OK, &json!({ "rules": list }))
}

pub(crate) fn no_hub() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "rules are not available on this server",
    )
}

pub(crate) fn rule_error(e: midge_hub::RuleChangeError) -> Response {
    use midge_hub::RuleChangeError as E;
    let (status, problems) = match &e {
        E::Invalid(p) => (StatusCode::BAD_REQUEST, p.clone()),
        E::Exists(_) | E::FromConfig(_) => (StatusCode::CONFLICT, vec![e.to_string()]),
        E::NotFound(_) => (StatusCode::NOT_FOUND, vec![e.to_string()]),
        E::Save(_) => (StatusCode::INTERNAL_SERVER_ERROR, vec![e.to_string()]),
    };
    json_response(
        status,
        &json!({ "error": e.to_string(), "problems": problems }),
    )
}

/// `POST /api/v1/rules`: the rule runs (and is saved) when the answer comes.
async fn add_rule(
    State(state): State<AppState>,
    JsonBody(spec): JsonBody<midge_hub::RuleSpec>,
) -> Result<Response, ApiError> {
    let hub = state.0.hub.clone().ok_or_else(no_hub)?;
    let name = spec.name.clone();
    Ok(match hub.add(spec).await {
        Ok(()) => json_response(StatusCode::CREATED, &json!({ "name": name })),
        Err(e) => rule_error(e),
    })
}

/// `DELETE /api/v1/rules/{name}`: only rules added through the API.
async fn remove_rule(
    State(state): State<AppState>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Result<Response, ApiError> {
    let hub = state.0.hub.clone().ok_or_else(no_hub)?;
    Ok(match hub.remove(&name).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => rule_error(e),
    })
}
