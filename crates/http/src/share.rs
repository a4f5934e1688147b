//! Share links: `POST /api/v1/tokens {"ttl": 3600, "dashboard": "ID"}` makes a token and
//! a URL (`/?token=...`) that opens that dashboard (default: the first) read-only without a
//! login, as hosted hubs' viewer tokens do. A token can read what its dashboard shows and
//! nothing else: the page and its files, that dashboard's widget list, and the live stream,
//! last values, series and rows of its widgets' topics (GET only; no publishing, no rules,
//! no other topics or dashboards, no figures). It is taken from
//! `Authorization: Bearer TOKEN`, from `?token=` (the page then gets it as an HttpOnly cookie,
//! so its own requests carry it), or from that cookie. Tokens expire (their `ttl`), are listed
//! (`GET /api/v1/tokens`, never the token itself) and revoked (`DELETE /api/v1/tokens/{id}`).
//! Only a hash of each token is kept, in `share_tokens.json` beside the dashboard file
//! (memory only without one).

use std::path::{Path as FsPath, PathBuf};
use std::sync::{Mutex, MutexGuard};

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::api::{ApiError, AppState, JsonBody, json_response};
use crate::time::now_ms;

/// The cookie a page opened with `?token=` keeps the token in.
const COOKIE: &str = "midge_share";
/// Longest time to live of a token (one year, seconds).
const MAX_TTL: u64 = 366 * 86_400;
/// Most tokens at once.
const MAX_TOKENS: usize = 1_000;

/// One token as kept (its hash, never the token).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    id: String,
    /// Hex SHA-256 of the token.
    hash: String,
    dashboard: String,
    created: i64,
    expires: i64,
}

/// The share tokens of one HTTP server.
#[derive(Debug)]
pub(crate) struct Tokens {
    file: Option<PathBuf>,
    entries: Mutex<Vec<Entry>>,
}

/// Marks a request a valid share token let through (the credentials check skips it), with
/// the id of the dashboard the token opens.
#[derive(Debug, Clone)]
pub(crate) struct Granted(String);

fn hash(token: &str) -> String {
    let d = Sha256::digest(token.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// `n` random bytes as URL-safe base64; 500 when the system has no randomness to give.
fn random(n: usize) -> Result<String, ApiError> {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("no randomness: {e}"),
        )
    })?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

impl Tokens {
    /// The tokens saved beside `dashboard_file` (none without it, or when unreadable).
    pub(crate) fn load(dashboard_file: Option<&FsPath>) -> Tokens {
        let file = dashboard_file.map(|d| {
            d.parent()
                .map(PathBuf::from)
                .unwrap_or_default()
                .join("share_tokens.json")
        });
        let entries = match file.as_ref().map(std::fs::read) {
            Some(Ok(b)) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                warn!(error = %e, "share_tokens.json unreadable: no share link works until new ones are made");
                Vec::new()
            }),
            _ => Vec::new(),
        };
        Tokens {
            file,
            entries: Mutex::new(entries),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes `entries` to the file (when there is one); a failure is logged and answered
    /// 500.
    async fn save(&self, entries: &[Entry]) -> Result<(), ApiError> {
        let Some(path) = &self.file else {
            return Ok(());
        };
        let text = serde_json::to_vec_pretty(entries)
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        crate::api::save_file(path, text, "the share tokens were").await
    }

    /// The dashboard a live `token` opens.
    fn find(&self, token: &str, now: i64) -> Option<String> {
        let h = hash(token);
        self.lock()
            .iter()
            .find(|e| e.hash == h && e.expires > now)
            .map(|e| e.dashboard.clone())
    }
}

/// The token a request brings: `Authorization: Bearer`, `?token=`, or the cookie. A request
/// with other credentials (Basic, a signature) is judged by them alone, so an operator who
/// opened a share link in the same browser keeps the operator's rights.
fn presented(req: &Request) -> Option<(String, bool)> {
    if let Some(v) = req.headers().get(header::AUTHORIZATION) {
        let text = v.to_str().ok()?;
        let (scheme, token) = text.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        return Some((token.trim().to_owned(), false));
    }
    if let Some(q) = req.uri().query() {
        for (k, v) in form_urlencoded::parse(q.as_bytes()) {
            if k == "token" {
                return Some((v.into_owned(), true));
            }
        }
    }
    cookie(req.headers()).map(|t| (t, false))
}

fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            let (k, v) = c.trim().split_once('=')?;
            (k == COOKIE).then(|| v.to_owned())
        })
}

/// Whether every topic filter the request names is covered by a widget topic.
fn topics_allowed(req: &Request, widget_topics: &[String]) -> bool {
    let covered = |f: &str| {
        widget_topics
            .iter()
            .any(|w| w == f || (!f.contains(['+', '#']) && midge_codec::matches_filter(w, f)))
    };
    let mut named = false;
    for (k, v) in form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
        if k == "filter" || k == "topic" {
            named = true;
            if !covered(&v) {
                return false;
            }
        }
    }
    named
}

/// Routes a share token may use (GET only).
fn allowed(req: &Request, widget_topics: &[String], dashboard: &str) -> bool {
    if req.method() != Method::GET {
        return false;
    }
    let path = req.uri().path();
    match path {
        "/" | "/api/v1/dashboard" | "/api/v1/dashboards" => true,
        _ if path.strip_prefix("/api/v1/dashboards/") == Some(dashboard) => true,
        "/api/v1/live" | "/api/v1/last" => topics_allowed(req, widget_topics),
        _ if path.starts_with("/assets/") => true,
        _ => {
            // series for charts; rows for a map's trail and a table's messages
            path.starts_with("/api/v1/tables/")
                && (path.ends_with("/series") || path.ends_with("/rows"))
                && topics_allowed(req, widget_topics)
        }
    }
}

/// The middleware (before the credentials check): a request bringing a share token is let
/// through, marked [`Granted`], when the token is live and the route is one it may use;
/// refused otherwise. Requests without a token go on to the credentials check.
pub(crate) async fn require(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    if req.uri().path() == "/api/v1/health" {
        return next.run(req).await;
    }
    let Some((token, in_query)) = presented(&req) else {
        return next.run(req).await;
    };
    let tokens = &state.0.share;
    let Some(dashboard) = tokens.find(&token, now_ms()) else {
        state
            .0
            .auth
            .refused
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "this share link has expired or was revoked",
        )
        .into_response();
    };
    let dashboard = state.0.dashboard.resolve(&dashboard).unwrap_or(dashboard);
    let topics = state.0.dashboard.widget_topics(&dashboard);
    if !allowed(&req, &topics, &dashboard) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "a share link is read-only: it opens the dashboard {dashboard:?} and reads its widgets' topics, nothing else"
            ),
        )
        .into_response();
    }
    req.extensions_mut().insert(Granted(dashboard));
    let page = req.uri().path() == "/";
    let mut response = next.run(req).await;
    if in_query
        && page
        && let Ok(v) = HeaderValue::from_str(&format!(
            "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"
        ))
    {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

/// Whether [`require`] let this request through with a share token.
pub(crate) fn granted(req: &Request) -> bool {
    req.extensions().get::<Granted>().is_some()
}

/// The dashboard the share token that let this request through opens.
pub(crate) fn granted_dashboard(req: &Request) -> Option<String> {
    req.extensions().get::<Granted>().map(|g| g.0.clone())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewToken {
    /// Seconds the token lives (default one day).
    #[serde(default = "default_ttl")]
    ttl: u64,
    /// The id of the dashboard it opens (default the first; `main` is the first too when
    /// no dashboard has that id, as before there were several).
    #[serde(default)]
    dashboard: Option<String>,
}

fn default_ttl() -> u64 {
    86_400
}

fn entry_json(e: &Entry) -> serde_json::Value {
    json!({ "id": e.id, "dashboard": e.dashboard, "created": e.created, "expires": e.expires })
}

/// `POST /api/v1/tokens`: 201 with the token (shown this once) and its URL.
pub(crate) async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(b): JsonBody<NewToken>,
) -> Result<Response, ApiError> {
    if b.ttl == 0 || b.ttl > MAX_TTL {
        return Err(ApiError::bad_request(format!(
            "ttl: 1 to {MAX_TTL} seconds"
        )));
    }
    let dashboards = &state.0.dashboard;
    let dashboard = match b.dashboard {
        None => dashboards.first_id(),
        Some(d) => dashboards.resolve(&d).ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no dashboard {d:?} (GET /api/v1/dashboards lists them)"),
            )
        })?,
    };
    let token = random(32)?;
    let now = now_ms();
    let ttl_ms = i64::try_from(b.ttl.saturating_mul(1000)).unwrap_or(i64::MAX);
    let entry = Entry {
        id: random(9)?,
        hash: hash(&token),
        dashboard,
        created: now,
        expires: now.saturating_add(ttl_ms),
    };
    let tokens = &state.0.share;
    let mut next: Vec<Entry> = tokens
        .lock()
        .iter()
        .filter(|e| e.expires > now)
        .cloned()
        .collect();
    if next.len() >= MAX_TOKENS {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("{MAX_TOKENS} share tokens exist: revoke some first"),
        ));
    }
    next.push(entry.clone());
    tokens.save(&next).await?;
    *tokens.lock() = next;
    info!(id = %entry.id, ttl = b.ttl, "share token made");
    let path = format!("/?token={token}");
    let url = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| format!("http://{h}{path}"));
    let mut v = entry_json(&entry);
    if let Some(o) = v.as_object_mut() {
        o.insert("token".into(), json!(token));
        o.insert("path".into(), json!(path));
        o.insert("url".into(), json!(url));
    }
    Ok(json_response(StatusCode::CREATED, &v))
}

/// `GET /api/v1/tokens`: the live tokens, never the tokens themselves.
pub(crate) async fn list(State(state): State<AppState>) -> Response {
    let now = now_ms();
    let list: Vec<_> = state
        .0
        .share
        .lock()
        .iter()
        .filter(|e| e.expires > now)
        .map(entry_json)
        .collect();
    json_response(StatusCode::OK, &json!({ "tokens": list }))
}

/// `DELETE /api/v1/tokens/{id}`: the link stops working at once.
pub(crate) async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let tokens = &state.0.share;
    let next: Vec<Entry> = tokens
        .lock()
        .iter()
        .filter(|e| e.id != id)
        .cloned()
        .collect();
    if next.len() == tokens.lock().len() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no share token {id:?}"),
        ));
    }
    tokens.save(&next).await?;
    *tokens.lock() = next;
    info!(id = %id, "share token revoked");
    Ok(StatusCode::NO_CONTENT.into_response())
}
