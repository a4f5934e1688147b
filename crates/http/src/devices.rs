//! The device registry and the operations console over HTTP (operators only: the same
//! authentication as the rest of the API; a device's own credentials never open it).
//!
//! - `GET/POST /api/v1/devices`, `GET/PATCH/DELETE /api/v1/devices/{name}`,
//!   `POST /api/v1/devices/{name}/rotate`: a created or rotated device's secret is in that
//!   answer only (stored hashed). A device's answer lists its live `clients`.
//! - `GET /api/v1/devices/{name}/topics?client_id=`: the filters its policies (its own and
//!   its groups') grant, with `${device}` and `%u` substituted (`%c` too when a client id
//!   is given); `POST /api/v1/devices/{name}/publish {"topic", "payload", "qos", "retain",
//!   "client_id"}`: publish as the device (the device page's test panel), refused with 403
//!   unless the device is enabled and its policies let it publish there, exactly as its own
//!   PUBLISH would be judged (`client_id` for `%c`: default its first live client's, else
//!   the device name).
//! - `GET/POST /api/v1/policies`, `GET/PUT/DELETE /api/v1/policies/{name}`.
//! - `GET/POST /api/v1/groups`, `PUT/DELETE /api/v1/groups/{name}`.
//! - `GET/PUT /api/v1/registry`: the hub name and the username template.
//! - `GET /api/v1/clients` (sessions, connected or not; midge's own in-process clients
//!   apart), `GET /api/v1/clients/{id}`, `DELETE /api/v1/clients/{id}` (disconnect: MQTT 5
//!   DISCONNECT 0x98); `GET /api/v1/sessions` (offline persistent sessions),
//!   `DELETE /api/v1/sessions/{id}` (discard); `GET /api/v1/subscriptions?filter=&client=`;
//!   `GET /api/v1/retained?filter=&limit=&payload_limit=`, `DELETE /api/v1/retained?filter=`.
//!
//! Every change applies at once: disabling, deleting or rotating a device cuts its live
//! connections, narrowing a policy drops the subscriptions it no longer allows.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use midge_auth::{
    DevicePatch, DeviceRecord, Group, NewDevice, Policy, Registry, RegistryError, RegistrySettings,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::{ApiError, AppState, JsonBody, json_response};

/// The routes of this module.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/devices", get(list_devices).post(add_device))
        .route(
            "/api/v1/devices/{name}",
            get(show_device).patch(patch_device).delete(remove_device),
        )
        .route("/api/v1/devices/{name}/rotate", post(rotate))
        .route("/api/v1/devices/{name}/topics", get(device_topics))
        .route("/api/v1/devices/{name}/publish", post(publish_as))
        .route("/api/v1/policies", get(list_policies).post(add_policy))
        .route(
            "/api/v1/policies/{name}",
            get(show_policy).put(put_policy).delete(remove_policy),
        )
        .route("/api/v1/groups", get(list_groups).post(add_group))
        .route(
            "/api/v1/groups/{name}",
            axum::routing::put(put_group).delete(remove_group),
        )
        .route("/api/v1/registry", get(settings).put(put_settings))
        .route("/api/v1/clients", get(clients))
        .route(
            "/api/v1/clients/{id}",
            get(show_client).delete(disconnect_client),
        )
        .route("/api/v1/sessions", get(list_sessions))
        .route(
            "/api/v1/sessions/{id}",
            axum::routing::delete(discard_session),
        )
        .route("/api/v1/subscriptions", get(subscriptions))
        .route("/api/v1/retained", get(retained).delete(clear_retained))
}

fn registry(state: &AppState) -> Result<Arc<Registry>, ApiError> {
    state.0.server.registry().cloned().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "this server runs without a device registry",
        )
    })
}

fn error(e: RegistryError) -> ApiError {
    let status = match &e {
        RegistryError::NotFound { .. } => StatusCode::NOT_FOUND,
        RegistryError::Conflict(_) => StatusCode::CONFLICT,
        RegistryError::Invalid(_) => StatusCode::BAD_REQUEST,
        RegistryError::File { .. } | RegistryError::Secret(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, e.to_string())
}

/// Run a registry change on the blocking pool (it writes and fsyncs the file; creating and
/// rotating hash a secret with PBKDF2).
async fn blocking<T: Send + 'static>(
    registry: Arc<Registry>,
    f: impl FnOnce(&Registry) -> Result<T, RegistryError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(move || f(&registry))
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "registry task failed"))?
        .map_err(error)
}

fn device_json(d: &DeviceRecord, online: Option<usize>) -> Value {
    let mut v = json!({
        "name": d.name,
        "username": d.username,
        "enabled": d.enabled,
        "has_secret": d.secret_hash.is_some(),
        "cert_cn": d.cert_cn,
        "description": d.description,
        "tags": d.tags,
        "policies": d.policies,
        "groups": d.groups,
        "created": d.created_ms,
        "last_seen": d.last_seen_ms,
    });
    if let (Some(n), Some(o)) = (online, v.as_object_mut()) {
        o.insert("connections".into(), json!(n));
    }
    v
}

/// Connected sessions per username.
async fn online(state: &AppState) -> std::collections::HashMap<String, usize> {
    let mut m = std::collections::HashMap::new();
    for c in state.0.server.clients().await.unwrap_or_default() {
        if let (true, Some(u)) = (c.summary.connected, c.summary.username) {
            *m.entry(u.to_string()).or_insert(0) += 1;
        }
    }
    m
}

async fn list_devices(State(state): State<AppState>) -> Result<Response, ApiError> {
    let r = registry(&state)?;
    let on = online(&state).await;
    let devices: Vec<Value> = r
        .devices()
        .iter()
        .map(|d| device_json(d, Some(on.get(&d.username).copied().unwrap_or(0))))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "devices": devices }),
    ))
}

async fn show_device(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let r = registry(&state)?;
    let d = r.device(&name).ok_or_else(|| {
        error(RegistryError::NotFound {
            kind: "device",
            name: name.clone(),
        })
    })?;
    let live = device_clients(&state, &d.username).await;
    let mut v = device_json(&d, Some(live.len()));
    if let Some(o) = v.as_object_mut() {
        let clients: Vec<Value> = live
            .iter()
            .map(|c| {
                json!({
                    "client_id": c.summary.client_id.to_string(),
                    "address": c.peer.map(|p| p.to_string()),
                    "listener": c.summary.listener,
                    "protocol": c.summary.protocol.to_string(),
                    "connected_since": c.connected_since_ms,
                })
            })
            .collect();
        o.insert("clients".into(), json!(clients));
    }
    Ok(json_response(StatusCode::OK, &v))
}

/// The connected (non-internal) clients logged in as `username`.
async fn device_clients(state: &AppState, username: &str) -> Vec<midge_server::ClientView> {
    let mut v: Vec<_> = state
        .0
        .server
        .clients()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|c| {
            c.summary.connected
                && !c.summary.internal
                && c.summary.username.as_deref() == Some(username)
        })
        .collect();
    v.sort_by_key(|c| c.connected_since_ms);
    v
}

fn find_device(r: &Registry, name: &str) -> Result<DeviceRecord, ApiError> {
    r.device(name).ok_or_else(|| {
        error(RegistryError::NotFound {
            kind: "device",
            name: name.to_owned(),
        })
    })
}

/// A policy filter as the device gets it: `${device}` and `%u` substituted, `%c` too when
/// the client id is known (as the registry compiles them).
fn resolve(filter: &str, d: &DeviceRecord, client_id: Option<&str>) -> String {
    let f = filter
        .replace("${device}", &d.name)
        .replace("%u", &d.username);
    match client_id {
        Some(c) => f.replace("%c", c),
        None => f,
    }
}

/// The policies of a device (its own and its groups'), by name, in order.
fn device_policies(r: &Registry, d: &DeviceRecord) -> Vec<Policy> {
    let mut names: std::collections::BTreeSet<String> = d.policies.iter().cloned().collect();
    for g in r.groups() {
        if d.groups.contains(&g.name) {
            names.extend(g.policies);
        }
    }
    names.iter().filter_map(|n| r.policy(n)).collect()
}

async fn device_topics(
    State(state): State<AppState>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p = params(q.as_deref(), &["client_id"])?;
    let r = registry(&state)?;
    let d = find_device(&r, &name)?;
    let client_id = p.get("client_id").map(String::as_str);
    let policies = device_policies(&r, &d);
    let mut publish: Vec<String> = Vec::new();
    let mut subscribe: Vec<String> = Vec::new();
    for pol in &policies {
        for (from, to) in [
            (&pol.publish, &mut publish),
            (&pol.subscribe, &mut subscribe),
        ] {
            for f in from {
                let f = resolve(f, &d, client_id);
                if !to.contains(&f) {
                    to.push(f);
                }
            }
        }
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "name": d.name,
            "username": d.username,
            "enabled": d.enabled,
            "client_id": client_id,
            "publish": publish,
            "subscribe": subscribe,
            "policies": policies,
        }),
    ))
}

/// Publish as the device: judged by the registry as the device's own PUBLISH would be,
/// then sent through the HTTP publisher.
async fn publish_as(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonBody(mut body): JsonBody<serde_json::Map<String, Value>>,
) -> Result<Response, ApiError> {
    let r = registry(&state)?;
    let d = find_device(&r, &name)?;
    let client_id = match body.remove("client_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(c)) if !c.is_empty() => Some(c),
        Some(_) => {
            return Err(ApiError::bad_request(
                "client_id must be a non-empty string",
            ));
        }
    };
    let req: crate::publish::PublishRequest = serde_json::from_value(Value::Object(body))
        .map_err(|e| ApiError::bad_request(format!("bad JSON body: {e}")))?;
    let topic = req.topic().to_owned();
    let publish = req.message()?;
    let client_id = match client_id {
        Some(c) => c,
        None => device_clients(&state, &d.username)
            .await
            .first()
            .map_or_else(|| d.name.clone(), |c| c.summary.client_id.to_string()),
    };
    if !d.enabled {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("device {name:?} is disabled: it may neither connect nor publish"),
        ));
    }
    let allowed = r.check(
        Some(&d.username),
        &client_id,
        &topic,
        midge_auth::Access::Write,
    );
    if allowed != Some(true) {
        let held = device_policies(&r, &d)
            .iter()
            .map(|p| p.name.clone())
            .collect::<Vec<_>>();
        let why = if held.is_empty() {
            "it has no policy".to_owned()
        } else {
            format!(
                "none of its policies ({}) lets it publish there",
                held.join(", ")
            )
        };
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "device {name:?} may not publish to {topic:?}: {why} (the broker would answer 0x87 Not authorized)"
            ),
        ));
    }
    let mut v = crate::publish::send(&state, publish).await?;
    if let Some(o) = v.as_object_mut() {
        o.insert("device".into(), json!(d.name));
        o.insert("client_id".into(), json!(client_id));
    }
    Ok(json_response(StatusCode::OK, &v))
}

async fn add_device(
    State(state): State<AppState>,
    JsonBody(new): JsonBody<NewDevice>,
) -> Result<Response, ApiError> {
    let r = registry(&state)?;
    let (d, secret) = blocking(r, move |r| r.add_device(new)).await?;
    let mut v = device_json(&d, None);
    if let Some(o) = v.as_object_mut() {
        o.insert("secret".into(), json!(secret));
    }
    Ok(json_response(StatusCode::CREATED, &v))
}

async fn patch_device(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonBody(patch): JsonBody<DevicePatch>,
) -> Result<Response, ApiError> {
    let r = registry(&state)?;
    let (d, change) = blocking(r, move |r| r.patch_device(&name, patch)).await?;
    let (cut, dropped) = state.0.server.apply(change).await;
    let mut v = device_json(&d, None);
    if let Some(o) = v.as_object_mut() {
        o.insert("disconnected".into(), json!(cut));
        o.insert("subscriptions_dropped".into(), json!(dropped));
    }
    Ok(json_response(StatusCode::OK, &v))
}

async fn remove_device(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let r = registry(&state)?;
    let n = name.clone();
    let change = blocking(r, move |r| r.remove_device(&n)).await?;
    let (cut, _) = state.0.server.apply(change).await;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "deleted": name, "disconnected": cut }),
    ))
}

async fn rotate(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let r = registry(&state)?;
    let n = name.clone();
    let (secret, change) = blocking(r.clone(), move |r| r.rotate_secret(&n)).await?;
    let (cut, _) = state.0.server.apply(change).await;
    let username = r.device(&name).map(|d| d.username).unwrap_or_default();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "name": name, "username": username, "secret": secret, "disconnected": cut }),
    ))
}

/// A policy in a request (the name from the path for PUT).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    publish: Vec<String>,
    #[serde(default)]
    subscribe: Vec<String>,
    #[serde(default)]
    description: String,
}

impl PolicyBody {
    fn into_policy(self, name: String) -> Policy {
        Policy {
            name,
            publish: self.publish,
            subscribe: self.subscribe,
            description: self.description,
        }
    }
}

async fn list_policies(State(state): State<AppState>) -> Result<Response, ApiError> {
    let r = registry(&state)?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "policies": r.policies() }),
    ))
}

async fn show_policy(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let r = registry(&state)?;
    let p = r.policy(&name).ok_or_else(|| {
        error(RegistryError::NotFound {
            kind: "policy",
            name: name.clone(),
        })
    })?;
    Ok(json_response(StatusCode::OK, &json!(p)))
}

async fn add_policy(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<PolicyBody>,
) -> Result<Response, ApiError> {
    let r = registry(&state)?;
    let Some(name) = body.name.clone() else {
        return Err(ApiError::bad_request("a policy needs a name"));
    };
    let p = body.into_policy(name);
    let shown = p.clone();
    blocking(r, move |r| r.add_policy(p)).await?;
    Ok(json_response(StatusCode::CREATED, &json!(shown)))
}

async fn put_policy(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<PolicyBody>,
) -> Result<Response, ApiError> {
    let r = registry(&state)?;
    if body.name.as_ref().is_some_and(|n| *n != name) {
        return Err(ApiError::bad_request(
            "the body's name differs from the path's",
        ));
    }
    let p = body.into_policy(name);
    let shown = p.clone();
    let change = blocking(r, move |r| r.replace_policy(p)).await?;
    let (_, dropped) = state.0.server.apply(change).await;
    let mut v = json!(shown);
    if let Some(o) = v.as_object_mut() {
        o.insert("subscriptions_dropped".into(), json!(dropped));
    }
    Ok(json_response(StatusCode::OK, &v))
}

async fn remove_policy(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let r = registry(&state)?;
    let n = name.clone();
    blocking(r, move |r| r.remove_policy(&n)).await?;
    Ok(json_response(StatusCode::OK, &json!({ "deleted": name })))
}

async fn list_groups(State(state): State<AppState>) -> Result<Response, ApiError> {
    let r = registry(&state)?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "groups": r.groups() }),
    ))
}

async fn add_group(
    State(state): State<AppState>,
    JsonBody(g): JsonBody<Group>,
) -> Result<Response, ApiError> {
    let r = registry(&state)?;
    if r.groups().iter().any(|o| o.name == g.name) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("a group named {:?} exists", g.name),
        ));
    }
    let shown = g.clone();
    let change = blocking(r, move |r| r.put_group(g)).await?;
    state.0.server.apply(change).await;
    Ok(json_response(StatusCode::CREATED, &json!(shown)))
}

/// A group in a PUT body (the name from the path).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupBody {
    #[serde(default)]
    policies: Vec<String>,
}

async fn put_group(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<GroupBody>,
) -> Result<Response, ApiError> {
    let r = registry(&state)?;
    let g = Group {
        name,
        policies: body.policies,
    };
    let shown = g.clone();
    let change = blocking(r, move |r| r.put_group(g)).await?;
    let (_, dropped) = state.0.server.apply(change).await;
    let mut v = json!(shown);
    if let Some(o) = v.as_object_mut() {
        o.insert("subscriptions_dropped".into(), json!(dropped));
    }
    Ok(json_response(StatusCode::OK, &v))
}

async fn remove_group(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let r = registry(&state)?;
    let n = name.clone();
    blocking(r, move |r| r.remove_group(&n)).await?;
    Ok(json_response(StatusCode::OK, &json!({ "deleted": name })))
}

async fn settings(State(state): State<AppState>) -> Result<Response, ApiError> {
    let r = registry(&state)?;
    let s = r.settings();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "hub": s.hub,
            "username_template": s.username_template,
            "devices": r.len(),
            "file": r.path().map(|p| p.display().to_string()),
        }),
    ))
}

async fn put_settings(
    State(state): State<AppState>,
    JsonBody(s): JsonBody<RegistrySettings>,
) -> Result<Response, ApiError> {
    let r = registry(&state)?;
    let shown = s.clone();
    blocking(r, move |r| r.set_settings(s)).await?;
    Ok(json_response(StatusCode::OK, &json!(shown)))
}

fn client_json(c: &midge_server::ClientView, device: Option<String>) -> Value {
    json!({
        "client_id": c.summary.client_id.to_string(),
        "username": c.summary.username.as_ref().map(ToString::to_string),
        "device": device,
        "connected": c.summary.connected,
        "listener": c.summary.listener,
        "protocol": c.summary.protocol.to_string(),
        "session_expiry": c.summary.expiry_interval,
        "queued": c.summary.queued,
        "inflight": c.summary.inflight,
        "subscriptions": c.summary.subscriptions.iter().map(|(f, q)| json!({"filter": f.to_string(), "qos": q})).collect::<Vec<_>>(),
        "address": c.peer.map(|p| p.to_string()),
        "connected_since": c.connected_since_ms,
        "keep_alive": c.keep_alive,
        "messages_in": c.messages_in,
        "messages_out": c.messages_out,
    })
}

async fn sessions(state: &AppState) -> Result<Vec<midge_server::ClientView>, ApiError> {
    state
        .0
        .server
        .clients()
        .await
        .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the broker is not running"))
}

async fn clients(State(state): State<AppState>) -> Result<Response, ApiError> {
    let all = sessions(&state).await?;
    let reg = state.0.server.registry().cloned();
    let device = |c: &midge_server::ClientView| {
        let u = c.summary.username.as_deref()?;
        reg.as_ref()?.device_of(u)
    };
    let (internal, user): (Vec<_>, Vec<_>) = all.iter().partition(|c| c.summary.internal);
    let list = |v: &[&midge_server::ClientView]| -> Vec<Value> {
        v.iter().map(|c| client_json(c, device(c))).collect()
    };
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "clients": list(&user),
            "connected": user.iter().filter(|c| c.summary.connected).count(),
            "internal": list(&internal),
        }),
    ))
}

async fn show_client(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let all = sessions(&state).await?;
    let c = all
        .iter()
        .find(|c| *c.summary.client_id == *id)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no client {id:?}")))?;
    let device = c
        .summary
        .username
        .as_deref()
        .and_then(|u| state.0.server.registry().and_then(|r| r.device_of(u)));
    Ok(json_response(StatusCode::OK, &client_json(c, device)))
}

async fn disconnect_client(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if id.starts_with("$midge/") {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "midge's own in-process clients cannot be disconnected",
        ));
    }
    let n = state
        .0
        .server
        .disconnect(Vec::new(), vec![id.clone()])
        .await
        .ok_or_else(|| {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the broker is not running")
        })?;
    if n == 0 {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no connected client {id:?}"),
        ));
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({ "disconnected": id }),
    ))
}

/// Query parameters (each at most once; unknown ones refused).
fn params(
    q: Option<&str>,
    known: &[&str],
) -> Result<std::collections::HashMap<String, String>, ApiError> {
    let mut m = std::collections::HashMap::new();
    for (k, v) in form_urlencoded::parse(q.unwrap_or("").as_bytes()) {
        if !known.contains(&k.as_ref()) {
            return Err(ApiError::bad_request(format!(
                "unknown parameter {k:?} (known: {})",
                known.join(", ")
            )));
        }
        if m.insert(k.to_string(), v.to_string()).is_some() {
            return Err(ApiError::bad_request(format!(
                "parameter {k:?} given twice"
            )));
        }
    }
    Ok(m)
}

/// Offline persistent sessions: client id, queued messages, expiry, subscriptions.
async fn list_sessions(State(state): State<AppState>) -> Result<Response, ApiError> {
    let all = sessions(&state).await?;
    let list: Vec<Value> = all
        .iter()
        .filter(|c| !c.summary.connected && !c.summary.internal)
        .map(|c| client_json(c, None))
        .collect();
    Ok(json_response(StatusCode::OK, &json!({ "sessions": list })))
}

async fn discard_session(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if id.starts_with("$midge/") {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "midge's own in-process clients cannot be discarded",
        ));
    }
    let found = state
        .0
        .server
        .discard_session(id.clone())
        .await
        .ok_or_else(|| {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the broker is not running")
        })?;
    if !found {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no session {id:?}"),
        ));
    }
    Ok(json_response(StatusCode::OK, &json!({ "discarded": id })))
}

/// Every subscription, `filter=` and `client=` keeping those that contain the text.
async fn subscriptions(
    State(state): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p = params(q.as_deref(), &["filter", "client"])?;
    let all = sessions(&state).await?;
    let mut list = Vec::new();
    for c in all.iter().filter(|c| !c.summary.internal) {
        if p.get("client")
            .is_some_and(|t| !c.summary.client_id.contains(t.as_str()))
        {
            continue;
        }
        for (f, qos) in &c.summary.subscriptions {
            if p.get("filter").is_some_and(|t| !f.contains(t.as_str())) {
                continue;
            }
            list.push(json!({
                "filter": f.to_string(),
                "qos": qos,
                "client_id": c.summary.client_id.to_string(),
                "connected": c.summary.connected,
            }));
        }
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({ "subscriptions": list }),
    ))
}

fn filter_param(
    p: &std::collections::HashMap<String, String>,
) -> Result<midge_codec::TopicFilter, ApiError> {
    let f = p.get("filter").map_or("#", String::as_str);
    midge_codec::TopicFilter::new(f)
        .map_err(|e| ApiError::bad_request(format!("invalid filter {f:?}: {e}")))
}

/// Retained messages matching `filter` (default `#`, which leaves `$SYS` out; `$SYS/#`
/// shows those), at most `limit` (default 100, at most 10,000), payloads up to
/// `payload_limit` bytes (default 1,024; text as is, binary in base64).
async fn retained(
    State(state): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p = params(q.as_deref(), &["filter", "limit", "payload_limit"])?;
    let filter = filter_param(&p)?;
    let number = |k: &str, d: usize| -> Result<usize, ApiError> {
        p.get(k).map_or(Ok(d), |v| {
            v.parse()
                .map_err(|_| ApiError::bad_request(format!("{k} must be a number")))
        })
    };
    let limit = number("limit", 100)?.min(10_000);
    let payload_limit = number("payload_limit", 1024)?;
    let msgs = state
        .0
        .server
        .retained(filter, limit.saturating_add(1))
        .await
        .ok_or_else(|| {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the broker is not running")
        })?;
    let truncated = msgs.len() > limit;
    let list: Vec<Value> = msgs
        .iter()
        .take(limit)
        .map(|m| {
            let shown = m
                .payload
                .get(..payload_limit.min(m.payload.len()))
                .unwrap_or_default();
            let (payload, encoding) = match std::str::from_utf8(shown) {
                Ok(t) => (t.to_owned(), "utf8"),
                Err(_) => (
                    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, shown),
                    "base64",
                ),
            };
            json!({
                "topic": m.topic.as_str(),
                "qos": m.qos.as_u8(),
                "size": m.payload.len(),
                "payload": payload,
                "payload_encoding": encoding,
                "payload_truncated": shown.len() < m.payload.len(),
            })
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "retained": list, "truncated": truncated }),
    ))
}

/// Delete the retained messages matching `filter` (required: one topic, or `a/#`).
async fn clear_retained(
    State(state): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p = params(q.as_deref(), &["filter"])?;
    if !p.contains_key("filter") {
        return Err(ApiError::bad_request(
            "say which: ?filter=a/topic or ?filter=a/%23",
        ));
    }
    let filter = filter_param(&p)?;
    let n = state.0.server.clear_retained(filter).await.ok_or_else(|| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the broker is not running")
    })?;
    Ok(json_response(StatusCode::OK, &json!({ "deleted": n })))
}
