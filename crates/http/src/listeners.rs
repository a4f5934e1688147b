//! `GET /api/v1/listeners`: the broker's listeners (kind, address, port, WebSocket path), so
//! the MQTT web client (`/client`) can point at the WebSocket listener without the user
//! looking up the configuration.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde::Serialize;
use serde_json::json;

use crate::api::{AppState, json_response};

/// One of the broker's listeners, as `GET /api/v1/listeners` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListenerInfo {
    /// `tcp`, `tls`, `ws` or `wss`.
    pub kind: String,
    /// The address it is bound to (`0.0.0.0`: every interface).
    pub address: String,
    /// The port it is bound to (the real one when the configuration said 0).
    pub port: u16,
    /// The WebSocket path browsers connect to (`None` for `tcp` and `tls`; `/mqtt` when the
    /// listener accepts both `/mqtt` and `/`).
    pub path: Option<String>,
    /// Whether clients without a username are let in (else the page asks for one).
    pub allow_anonymous: bool,
}

impl ListenerInfo {
    /// The listener configured as `config`, bound to `bound`.
    pub fn new(config: &midge_server::ListenerConfig, bound: SocketAddr) -> ListenerInfo {
        let ws = config.protocol == midge_server::ListenerProtocol::WebSockets;
        let kind = match (ws, config.tls.is_some()) {
            (false, false) => "tcp",
            (false, true) => "tls",
            (true, false) => "ws",
            (true, true) => "wss",
        };
        ListenerInfo {
            kind: kind.to_owned(),
            address: bound.ip().to_string(),
            port: bound.port(),
            path: ws.then(|| config.ws_path.clone().unwrap_or_else(|| "/mqtt".to_owned())),
            allow_anonymous: config.auth.allow_anonymous,
        }
    }
}

/// The routes of this module.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/listeners", get(list))
        .route("/api/v1/cluster", get(cluster))
}

/// The cluster's nodes as this node sees them (`node` null and no nodes when it is on its
/// own).
async fn cluster(State(state): State<AppState>) -> Response {
    let body = match &state.0.cluster {
        Some(c) => json!({ "node": c.node(), "nodes": c.nodes() }),
        None => json!({ "node": null, "nodes": [] }),
    };
    json_response(StatusCode::OK, &body)
}

async fn list(State(state): State<AppState>) -> Response {
    json_response(
        StatusCode::OK,
        &json!({ "listeners": state.0.listeners.as_slice() }),
    )
}
